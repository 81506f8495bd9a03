"""The three-stage run: ``run(config, out_dir, stages=(1, 2, 3)) -> RunResult``.

One function drives ``cora-kit run``, torchrun/DDP processes and the ablation grid
(``feature_cache_dir`` shared between cells). Per stage: assert the freeze schedule and
print the trainable groups, fill the frozen-feature cache, then AdamW with warmup +
cosine, gradient accumulation and clipping over a seeded, resumable item order.
Checkpoints hold trainable weights only (safetensors) plus a weights-only resume state;
Ctrl-C saves one before leaving, a non-finite loss stops the stage and keeps the last.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cora_kit.config import CoraConfig, StageConfig, to_yaml
from cora_kit.device import resolve_device
from cora_kit.errors import CheckpointError, CoraKitError
from cora_kit.train import checkpoint as ckpt
from cora_kit.train import distributed as dist_utils
from cora_kit.train.data import Splits, annotation_rows, data_report, epoch_items, load_splits, skipped_line, training_items
from cora_kit.train.progress import StageProgress
from cora_kit.train.protocol import CoraModelLike, ModelFactory
from cora_kit.train.run_dir import RunDir
from cora_kit.train.stages import STEP_FNS, FeatureProvider, epoch_order, plan_steps, stage1_views, warmup_cosine


class NonFiniteLossError(CoraKitError, FloatingPointError):
    """A loss became NaN/Inf; the stage stopped, the last good checkpoint is kept."""

    def __init__(self, stage: int, step: int, value: float, checkpoint_step: int | None) -> None:
        kept = f"last good checkpoint: step {checkpoint_step}" if checkpoint_step else "no checkpoint was written yet"
        super().__init__(f"stage {stage}: loss is {value} at step {step}; stopped ({kept})")
        self.stage, self.step, self.value, self.checkpoint_step = stage, step, value, checkpoint_step


@dataclass
class StageResult:
    stage: int
    steps: int
    metrics: dict[str, float]
    trainable: dict[str, int]
    seconds: float
    resumed_from: int | None = None
    skipped: bool = False
    #: the validation metrics at the end of the stage's last epoch (val_loss, val_adj_cos, ...)
    validation: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    out_dir: Path
    stages: dict[int, StageResult] = field(default_factory=dict)
    diagnostics: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    seconds: float = 0.0
    #: ``encoder_image_passes`` (images through the frozen encoder prefix) and ``cache_hits``
    cache_stats: dict[str, int] = field(default_factory=dict)
    #: data-report.json: rows read, items and skipped rows per split
    data: dict[str, Any] = field(default_factory=dict)


StepCallback = Callable[[int, int, dict[str, float]], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _StepModule(torch.nn.Module):
    """Wraps a stage step so DDP sees one ``forward`` (gradient all-reduce hooks)."""

    def __init__(self, model: CoraModelLike, stage: int, cfg: StageConfig) -> None:
        super().__init__()
        self.model = model
        self.fn = STEP_FNS[stage]
        self.cfg = cfg

    def forward(self, hidden: torch.Tensor, items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.fn(self.model, hidden, items, self.cfg)


@dataclass
class _Ctx:
    config: CoraConfig
    rd: RunDir
    dist: dist_utils.DistInfo
    device: torch.device
    cache_dir: Path
    progress: bool
    plain: bool
    on_step: StepCallback | None
    #: encoder_image_passes / cache_hits of every FeatureProvider of this run
    cache_stats: dict[str, int] = field(default_factory=dict)


def _auto_batch(
    ctx: _Ctx, model: CoraModelLike, stage: int, cfg: StageConfig, provider: FeatureProvider,
    items: Sequence[dict[str, Any]], say: Callable[..., None],
) -> StageConfig:
    """``--batch-size auto``: split the stage's effective batch by what fits; the choice is
    printed and written into the run's config.yaml."""
    from cora_kit.train.autobatch import search_stage_batch

    sample = provider.features(items[:1])
    fn = STEP_FNS[stage]

    def step(b: int) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        try:
            with _autocast(ctx.device, ctx.config.precision):
                loss, _ = fn(model, sample.expand(b, *sample.shape[1:]).clone(), [items[0]] * b, cfg)
            loss.backward()
        finally:
            model.zero_grad(set_to_none=True)
        return loss

    with torch.random.fork_rng(devices=[ctx.device.index or 0] if ctx.device.type == "cuda" else []):
        plan = search_stage_batch(step, cfg.batch_size, cfg.grad_accum, ctx.dist.world_size, ctx.device.type)
    new = cfg.model_copy(update={"batch_size": plan.micro_batch, "grad_accum": plan.grad_accum})
    say(
        f"stage {stage}: --batch-size auto: micro-batch {plan.micro_batch} x accumulation {plan.grad_accum}"
        f" x {plan.world_size} process(es) = effective {plan.effective} (unchanged); {plan.rule}"
    )
    stages = ctx.config.stages.model_copy(update={f"stage{stage}": new})
    ctx.config = ctx.config.model_copy(update={"stages": stages})
    ctx.rd.write_text(ctx.rd.config, to_yaml(ctx.config))
    return new


#: ``validate(stage, epoch)`` -> metrics to log (``val_loss``, ``val_adj_cos``, ...); run on rank 0
Validator = Callable[[int, int], dict[str, float]]


def _validate(ctx: _Ctx, validate: Validator | None, stage: int, epoch: int, step: int) -> dict[str, float]:
    """End of an epoch: the validation metrics, logged to metrics.jsonl (rank 0 computes,
    every rank waits)."""
    if validate is None:
        return {}
    values: dict[str, float] = {}
    if ctx.dist.is_main:
        with _autocast(ctx.device, ctx.config.precision):
            values = validate(stage, epoch)
        ctx.rd.log_metrics({"stage": stage, "step": step, "epoch": epoch, **values})
    dist_utils.barrier(ctx.dist)
    return values


def _train_stage(
    ctx: _Ctx, model: CoraModelLike, stage: int, items: Sequence[dict[str, Any]], resume: bool,
    validate: Validator | None = None,
) -> StageResult:
    cfg: StageConfig = getattr(ctx.config.stages, f"stage{stage}")
    stage_dir = ctx.rd.stage(stage)
    t0 = time.perf_counter()
    trainable = model.set_stage(stage)
    say = print if (ctx.progress and ctx.dist.is_main) else (lambda *a, **k: None)
    groups = ", ".join(f"{k} {v:,}" for k, v in trainable.items())
    say(f"stage {stage}: trainable groups: {groups} (total {sum(trainable.values()):,})")
    if not items:
        raise CoraKitError(f"stage {stage}: the training split is empty")

    seed_everything(ctx.config.seed * 1000 + stage)
    views = stage1_views(model) if stage == 1 else None  # seed: Stage 1 sees the tiles only
    provider = FeatureProvider(
        model, stage, str(ctx.cache_dir), ctx.device, ctx.config.eval.batch_size, views, stats=ctx.cache_stats
    )
    mine = items[ctx.dist.rank :: ctx.dist.world_size]
    n_new = provider.fill(mine)
    dist_utils.barrier(ctx.dist)
    provider.cache.refresh()
    say(f"stage {stage}: feature cache {provider.cache.dir} ({n_new} images encoded, {len(provider.cache)} cached)")

    if ctx.config.auto_batch:
        cfg = _auto_batch(ctx, model, stage, cfg, provider, items, say)
    micro, total = plan_steps(len(items), cfg, ctx.dist.world_size)
    params = [p for g in model.param_groups(stage, cfg) for p in g["params"]]
    optim = torch.optim.AdamW(model.param_groups(stage, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, warmup_cosine(total, cfg.warmup_ratio))
    step, resumed_from = 0, None
    if resume and ckpt.has_checkpoint(stage_dir):
        weights, state = ckpt.load_checkpoint(stage_dir)
        model.load_trainable_state_dict(weights, strict=True)
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        step = resumed_from = int(state["step"])
        if int(state["total_steps"]) != total:
            raise CheckpointError(
                f"{stage_dir}: checkpoint planned {state['total_steps']} steps, this config plans {total};"
                " resume needs the same config"
            )
        ctx.rd.truncate_metrics(stage, step)
        say(f"stage {stage}: resumed at step {step}/{total}")

    module = _StepModule(model, stage, cfg)
    runner: torch.nn.Module = module
    if ctx.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = DDP(module, device_ids=ids, find_unused_parameters=True)
    model.train()
    orders: dict[int, list[int]] = {}
    this_epoch: Sequence[dict[str, Any]] = items
    last_val: dict[str, float] = {}
    last_ckpt = resumed_from
    metrics: dict[str, float] = {}
    window: list[float] = []

    def save(at_step: int, rng: dict[str, Any]) -> None:
        nonlocal last_ckpt
        if ctx.rd.writer:
            ckpt.save_checkpoint(stage_dir, model.trainable_state_dict(stage), {
                "step": at_step, "total_steps": total, "stage": stage, "optimizer": optim.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng,
            })
        last_ckpt = at_step

    rng = ckpt.rng_state()
    with StageProgress(stage, total, enabled=ctx.progress and ctx.dist.is_main, force_plain=ctx.plain) as bar:
        bar.update(step, 0, {})
        epoch = (step * cfg.grad_accum) // micro
        try:
            while step < total:
                rng = ckpt.rng_state()  # the state a resume from `step` must restore
                optim.zero_grad(set_to_none=True)
                logs: dict[str, float] = {}
                n_items = 0
                for a in range(cfg.grad_accum):
                    m = step * cfg.grad_accum + a
                    epoch, idx = divmod(m, micro)
                    if epoch not in orders:
                        orders.clear()
                        orders[epoch] = epoch_order(len(items), ctx.config.seed, stage, epoch, ctx.dist.rank, ctx.dist.world_size)
                        this_epoch = epoch_items(items, stage, epoch)  # data.train_targets: sample
                    batch = [this_epoch[i] for i in orders[epoch][idx * cfg.batch_size : (idx + 1) * cfg.batch_size]]
                    hidden = provider.features(batch)
                    sync = a == cfg.grad_accum - 1 or not ctx.dist.enabled
                    # DDP all-reduces gradients only on the last micro-batch of a step
                    with contextlib.nullcontext() if sync else runner.no_sync():
                        with _autocast(ctx.device, ctx.config.precision):
                            loss, step_logs = runner(hidden, batch)
                        value = float(loss.detach())
                        if dist_utils.any_rank(not math.isfinite(value), ctx.dist, ctx.device):
                            raise NonFiniteLossError(stage, step + 1, value, last_ckpt)
                        (loss / cfg.grad_accum).backward()
                    for k, v in {"loss": value, **step_logs}.items():
                        logs[k] = logs.get(k, 0.0) + v / cfg.grad_accum
                    n_items += len(batch)
                grad_norm = None
                if cfg.grad_clip is not None:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
                lr = optim.param_groups[0]["lr"]
                optim.step()
                sched.step()
                step += 1
                window.append(logs["loss"])
                metrics = {**logs, "lr": lr, **({"grad_norm": grad_norm} if grad_norm is not None else {})}
                bar.update(step, n_items * ctx.dist.world_size, metrics)
                if step % cfg.log_every == 0 or step == total:
                    row = {"stage": stage, "step": step, "epoch": epoch, **metrics,
                           "loss_mean": sum(window) / len(window), "samples_per_s": bar.throughput()}
                    window.clear()
                    ctx.rd.log_metrics(row)
                if (step * cfg.grad_accum) % micro < cfg.grad_accum or step == total:
                    last_val = _validate(ctx, validate, stage, epoch, step)
                    shown = {k: v for k, v in last_val.items() if k in ("val_loss", "val_adj_cos")}
                    bar.epoch_end(epoch, step, {"loss": metrics["loss"], "lr": lr, **shown})
                if step % cfg.checkpoint_every == 0 and step < total:
                    save(step, ckpt.rng_state())
                if ctx.on_step is not None:
                    ctx.on_step(stage, step, metrics)
        except KeyboardInterrupt:
            save(step, rng)
            bar.message(f"stage {stage}: interrupted; checkpoint saved at step {step} ({stage_dir}); use --resume")
            raise
    final = model.trainable_state_dict(stage)
    seconds = time.perf_counter() - t0
    info = {"stage": stage, "steps": step, "metrics": metrics, "trainable": trainable, "seconds": seconds}
    if ctx.rd.writer:
        ckpt.mark_done(stage_dir, final, info)
    dist_utils.barrier(ctx.dist)
    say(f"stage {stage}: done, {step} steps in {seconds:.0f}s, loss {metrics.get('loss', float('nan')):.4f}")
    return StageResult(stage, step, metrics, trainable, seconds, resumed_from, validation=last_val)


def _load_previous(model: CoraModelLike, before: int, sources: Sequence[Path]) -> list[str]:
    """Load the final weights of stages ``1..before-1`` (from the first source that has
    them); a stage with no weights anywhere is a CheckpointError."""
    loaded = []
    for k in range(1, before):
        for root in sources:
            d = root / f"stage{k}"
            if ckpt.is_done(d):
                model.load_trainable_state_dict(ckpt.load_final(d), strict=True)
                loaded.append(str(d))
                break
        else:
            where = " or ".join(str(s) for s in sources)
            raise CheckpointError(
                f"stage {before} starts from stage {k}'s weights, but {where} has no finished stage{k}/;"
                f" run stage {k} first or pass --from RUN_DIR"
            )
    return loaded


DATA_REPORT = "data-report.json"


def _validator(config: CoraConfig, model: CoraModelLike, splits: Splits, ctx: _Ctx, report: Any) -> tuple[dict[int, Validator], dict[str, Any]]:
    """Per stage, what runs at the end of each epoch (``eval.validation``): Stage 1 the seed's
    diagnostics on stage1_val (logged ``val_adj_cos`` ...), Stages 2-3 the LM loss on every
    (image, query, annotation) row of the val split (``val_loss``). Also returns the dict the
    last Stage-1 diagnostics are kept in (diagnostics.json's ``after``)."""
    last: dict[str, Any] = {}
    if not config.eval.validation:
        return {}, last
    val_rows = annotation_rows(splits.val)

    def stage1(stage: int, epoch: int) -> dict[str, float]:
        diag = report.stage1_diagnostics(model, splits.stage1_val, ctx)
        last.clear()
        last.update(diag)
        return {f"val_{k}": float(v) for k, v in diag.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "num_images"}

    def lm(stage: int, epoch: int) -> dict[str, float]:
        return report.validation_loss(model, val_rows, ctx, stage)

    out: dict[int, Validator] = {}
    if splits.stage1_val:
        out[1] = stage1
    if val_rows:
        out[2] = out[3] = lm
    return out, last


def run(
    config: CoraConfig,
    out_dir: str | Path,
    stages: Sequence[int] = (1, 2, 3),
    *,
    model_factory: ModelFactory,
    resume: bool = False,
    feature_cache_dir: str | Path | None = None,
    from_run: str | Path | None = None,
    splits: Splits | None = None,
    evaluate: bool = True,
    progress: bool = True,
    plain_progress: bool = False,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Train ``stages`` in order into ``out_dir`` and evaluate; see the module docstring.

    ``model_factory(config, device)`` builds the model (``cora_kit.pipeline.CoraModel.
    from_config`` for real runs: the engine sits below the pipeline and never imports it).
    ``feature_cache_dir`` defaults to ``<out_dir>/../.feature-cache`` (shared by runs in
    one output folder). ``from_run`` supplies earlier stages' weights.
    """
    from cora_kit.train import report

    t_start = time.perf_counter()
    stages = sorted(set(int(s) for s in stages))
    if not stages or any(s not in STEP_FNS for s in stages):
        raise CoraKitError(f"stages must be a subset of 1,2,3; got {stages}")
    if config.eval.protocol == "paper":  # before hours of training: the columns exist
        from cora_kit.eval.protocols import paper_columns

        paper_columns(config.eval.metrics)
    info = dist_utils.setup(resolve_device(config.device).type)
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    out_dir = Path(out_dir)
    rd = RunDir(out_dir, writer=info.is_main)
    if not resume and any(rd.stage(s).exists() for s in stages):  # every rank checks: no hang
        raise CoraKitError(f"{out_dir} already holds stage folders; pass --resume to continue it or choose another --name")
    dist_utils.barrier(info)
    rd.prepare()
    cache_dir = Path(feature_cache_dir) if feature_cache_dir else out_dir.parent / ".feature-cache"
    ctx = _Ctx(config, rd, info, device, cache_dir, progress, plain_progress, on_step)

    seed_everything(config.seed)
    model = model_factory(config, device)
    splits = splits if splits is not None else load_splits(config)
    train_items = training_items(splits.train, config.data.train_targets, config.seed)
    data = data_report(splits, config, training=len(train_items))
    rd.write_json(rd.root / DATA_REPORT, data)
    if skipped_line(data) and info.is_main:  # never silent, whatever the progress setting
        import sys

        print(f"data: {skipped_line(data)}; every one is listed in {rd.root / DATA_REPORT}", file=sys.stderr)
    rd.write_text(rd.config, to_yaml(config))
    rd.write_json(rd.plugins, model.plugin_metadata())
    ckpt.check_or_write_fingerprint(rd.root / ckpt.WEIGHTS_FINGERPRINT, model.weights_fingerprint(), writer=rd.writer)
    sources = [out_dir] + ([Path(from_run)] if from_run else [])
    _load_previous(model, stages[0], sources)

    result = RunResult(out_dir, data=data)
    validate, last_diagnostics = _validator(config, model, splits, ctx, report)
    diag_before = None
    if 1 in stages and splits.stage1_val and not (resume and ckpt.is_done(rd.stage(1))):
        diag_before = report.stage1_diagnostics(model, splits.stage1_val, ctx)
    elif 1 in stages and rd.diagnostics.is_file():
        import json

        diag_before = json.loads(rd.diagnostics.read_text()).get("before")
    for stage in stages:
        if not getattr(config.stages, f"stage{stage}").enabled:
            continue
        stage_dir = rd.stage(stage)
        if resume and ckpt.is_done(stage_dir):
            model.set_stage(stage)
            model.load_trainable_state_dict(ckpt.load_final(stage_dir), strict=True)
            result.stages[stage] = StageResult(stage, 0, {}, {}, 0.0, skipped=True)
            continue
        items = splits.stage1_train if stage == 1 else train_items
        result.stages[stage] = _train_stage(ctx, model, stage, items, resume, validate.get(stage))
        if stage == 1 and splits.stage1_val:
            # the last epoch's validation already measured the final weights
            after = dict(last_diagnostics) or report.stage1_diagnostics(model, splits.stage1_val, ctx)
            result.diagnostics = {"split": "stage1_val", "before": diag_before, "after": after}
            rd.write_json(rd.diagnostics, result.diagnostics)
    if result.diagnostics is None and rd.diagnostics.is_file():
        import json

        result.diagnostics = json.loads(rd.diagnostics.read_text())
    if evaluate and max(stages) >= 2 and info.is_main:
        result.scores = report.evaluate_test(model, splits, ctx)
    dist_utils.barrier(info)
    result.seconds = time.perf_counter() - t_start
    result.cache_stats = dict(ctx.cache_stats)
    if info.is_main:
        report.write_summary(rd, config, result, splits, model.plugin_metadata())
    return result


__all__ = ["NonFiniteLossError", "RunResult", "StageResult", "run", "seed_everything"]
