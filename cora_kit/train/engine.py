"""The three-stage run: ``run(config, out_dir, stages=(1, 2, 3), model_factory=...) -> RunResult``.

One function drives ``cora-kit run``, torchrun/DDP processes and the ablation grid
(``feature_cache_dir`` shared between cells): set up the run folder and the device, build the
model (``model_factory``: the engine sits below the pipeline and never imports it), load the
splits (``data-report.json``: what was read and every skipped row) and the earlier stages'
weights, then per stage Stage-1 diagnostics around ``StageRun`` (``stage_run.py``: schedule,
feature cache, AdamW with warmup + cosine, accumulation, clipping, validation at each epoch
end, resumable checkpoints), and last the test-split evaluation and ``summary.md``. Stages
2-3 train on ``training_items`` (``data.train_targets``: every annotation row by default).
Checkpoints hold trainable weights only (safetensors) plus a weights-only resume state;
Ctrl-C saves one before leaving, a non-finite loss stops the stage and keeps the last good
one. The run holds ``run.lock`` of its folder throughout (``lock.py``), and a kill at any
moment leaves a folder ``--resume`` completes exactly (``checkpoint.py``, ``run_dir.py``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cora_kit.config import CoraConfig, to_yaml
from cora_kit.device import resolve_device
from cora_kit.errors import CheckpointError, ConfigError, CoraKitError
from cora_kit.train import checkpoint as ckpt
from cora_kit.train import distributed as dist_utils
from cora_kit.train import report
from cora_kit.train.context import (
    NonFiniteLossError,
    RunContext,
    RunResult,
    StageResult,
    StepCallback,
    Validator,
    seed_everything,
)
from cora_kit.train.data import Splits, data_report, load_splits, skipped_line, training_items
from cora_kit.train.lock import one_writer
from cora_kit.train.protocol import CoraModelLike, ModelFactory
from cora_kit.train.run_dir import RunDir
from cora_kit.train.stage_run import StageRun
from cora_kit.train.stages import STEP_FNS
from cora_kit.train.trackers import Trackers, check_available


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


def _open_run(config: CoraConfig, out_dir: Path, stages: list[int], resume: bool, feature_cache_dir: str | Path | None,
              progress: bool, plain_progress: bool, on_step: StepCallback | None,
              info: dist_utils.DistInfo) -> RunContext:
    """Device and run folder (refused when it holds stages and not resuming) in the process
    group ``info``, and the experiment trackers of ``config.logging`` (rank 0)."""
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    rd = RunDir(out_dir, writer=info.is_main)
    if not resume and any(rd.stage(s).exists() for s in stages):  # every rank checks: no hang
        raise CoraKitError(f"{out_dir} already holds stage folders; pass --resume to continue it or choose another --name")
    dist_utils.barrier(info)
    rd.prepare()
    cache_dir = Path(feature_cache_dir) if feature_cache_dir else out_dir.parent / ".feature-cache"
    ctx = RunContext(config, rd, info, device, cache_dir, progress, plain_progress, on_step)
    if rd.writer:
        lg = config.logging
        ctx.trackers = Trackers.open(
            lg.loggers, out_dir, config.model_dump(mode="json"), project=lg.project, wandb_mode=lg.wandb_mode,
            wandb_entity=lg.wandb_entity, group=lg.group, mlflow_tracking_uri=lg.mlflow_tracking_uri,
        )
        if ctx.trackers.names:
            ctx.say(f"logging to metrics.jsonl and {', '.join(ctx.trackers.names)}")
    return ctx


def _record_model(ctx: RunContext, model: CoraModelLike, first_stage: int, from_run: str | Path | None) -> None:
    """config.yaml + plugins.json + weights fingerprint, then the earlier stages' weights."""
    rd = ctx.rd
    rd.write_text(rd.config, to_yaml(ctx.config))
    rd.write_json(rd.plugins, model.plugin_metadata())
    ckpt.check_or_write_fingerprint(rd.root / ckpt.WEIGHTS_FINGERPRINT, model.weights_fingerprint(), writer=rd.writer)
    _load_previous(model, first_stage, [rd.root] + ([Path(from_run)] if from_run else []))


def _recorded_diagnostics(rd: RunDir) -> dict:
    """diagnostics.json as an earlier attempt left it ({} when absent or unreadable)."""
    try:
        data = json.loads(rd.diagnostics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _diagnostics_before(ctx: RunContext, model: CoraModelLike, stages: list[int], splits: Splits, resume: bool) -> dict | None:
    """Stage-1 diagnostics of the untrained resampler: the ones an earlier attempt recorded,
    else measured now (the model still holds its initial weights) and written at once, so no
    kill after this point can lose them. Rank 0 only (the other ranks go on to their next
    stage's cache fill)."""
    if 1 not in stages or not splits.stage1_val or not ctx.dist.is_main:
        return None
    recorded = _recorded_diagnostics(ctx.rd) if resume else {}
    if recorded.get("before") is not None:
        return recorded["before"]
    before = report.stage1_diagnostics(model, splits.stage1_val, ctx)
    ctx.rd.write_json(ctx.rd.diagnostics, {"split": "stage1_val", "before": before, "after": None})
    return before


DATA_REPORT = "data-report.json"


def _record_data(ctx: RunContext, splits: Splits, train_items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``data-report.json``; skipped rows are also printed (stderr), whatever the progress setting."""
    data = data_report(splits, ctx.config, training=len(train_items))
    ctx.rd.write_json(ctx.rd.root / DATA_REPORT, data)
    line = skipped_line(data)
    if line and ctx.dist.is_main:
        print(f"data: {line}; every one is listed in {ctx.rd.root / DATA_REPORT}", file=sys.stderr)
    return data


def _validators(ctx: RunContext, model: CoraModelLike, splits: Splits) -> tuple[dict[int, Validator], dict[str, Any]]:
    """Per stage, what runs at the end of each epoch (``eval.validation``): Stage 1 the seed's
    diagnostics on stage1_val (logged as ``val_adj_cos`` ...), Stages 2-3 the LM loss on the val
    split's rows chosen as for training (``val_loss``: every (image, query, annotation) row, or
    the first annotation of each (image, query) under ``train_targets: first``). Also returns the dict the
    last Stage-1 diagnostics are kept in (diagnostics.json's ``after``)."""
    last: dict[str, Any] = {}
    if not ctx.config.eval.validation:
        return {}, last
    # the training rule, except that `sample` (a per-epoch draw) validates on every row
    targets = "first" if ctx.config.data.train_targets == "first" else "all"
    val_rows = list(training_items(splits.val, targets))

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


def _check_every_stage_trains(ctx: RunContext, model: CoraModelLike, stages: list[int], resume: bool) -> None:
    """Before any work: a stage to train whose every group is frozen or held (lr scale 0) is a
    ``ConfigError`` naming it (``StageRun`` would otherwise fail after the stages before it)."""
    for stage in stages:
        cfg = getattr(ctx.config.stages, f"stage{stage}")
        if not cfg.enabled or (resume and ckpt.is_done(ctx.rd.stage(stage))):
            continue
        if not any(g["params"] for g in model.param_groups(stage, cfg)):
            raise ConfigError(
                f"stage {stage} has nothing to train: every group it trains is frozen or held"
                f" (stages.stage{stage}.*_lr_scale: 0); give one a scale > 0 or leave the stage out"
                f" (--stages / stages.stage{stage}.enabled: false)"
            )


def _train_stages(ctx: RunContext, model: CoraModelLike, stages: list[int], splits: Splits, resume: bool,
                  result: RunResult, train_items: Sequence[dict[str, Any]]) -> None:
    """Every enabled stage in order; finished ones are skipped on resume (weights loaded)."""
    _check_every_stage_trains(ctx, model, stages, resume)
    validators, last_diagnostics = _validators(ctx, model, splits)
    diag_before = _diagnostics_before(ctx, model, stages, splits, resume)
    for stage in stages:
        if not getattr(ctx.config.stages, f"stage{stage}").enabled:
            continue
        stage_dir = ctx.rd.stage(stage)
        trained = not (resume and ckpt.is_done(stage_dir))
        if not trained:
            if ctx.rd.writer:
                ckpt.tidy_done(stage_dir)  # checkpoints a kill left after done.json
            model.set_stage(stage)
            model.load_trainable_state_dict(ckpt.load_final(stage_dir), strict=True)
            result.stages[stage] = StageResult(stage, 0, {}, {}, 0.0, skipped=True)
        else:
            items = splits.stage1_train if stage == 1 else train_items
            result.stages[stage] = StageRun(ctx, model, stage, items, resume, validators.get(stage)).run()
        if stage == 1 and diag_before is not None and (trained or _recorded_diagnostics(ctx.rd).get("after") is None):
            # (rank 0) a stage trained here was measured by its last epoch's validation; after a kill
            # between done.json and diagnostics.json, the finished stage is measured now
            after = (dict(last_diagnostics) if trained else {}) or report.stage1_diagnostics(model, splits.stage1_val, ctx)
            result.diagnostics = {"split": "stage1_val", "before": diag_before, "after": after}
            ctx.rd.write_json(ctx.rd.diagnostics, result.diagnostics)
    if result.diagnostics is None and ctx.rd.diagnostics.is_file():
        result.diagnostics = _recorded_diagnostics(ctx.rd)


@one_writer
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
    from_config`` for real runs). ``feature_cache_dir`` defaults to
    ``<out_dir>/../.feature-cache`` (shared by runs in one output folder). ``from_run``
    supplies earlier stages' weights. Metrics go to ``metrics.jsonl`` and to the trackers of
    ``config.logging`` (closed - as failed when an exception leaves - before ``run``
    returns). Under torchrun the process group gets ``distributed.timeout_s`` and is
    destroyed at the end when this run created it.
    """
    t_start = time.perf_counter()
    wanted = sorted(set(int(s) for s in stages))
    if not wanted or any(s not in STEP_FNS for s in wanted):
        raise CoraKitError(f"stages must be a subset of 1,2,3; got {wanted}")
    if config.eval.protocol == "paper":  # before hours of training: the columns exist
        from cora_kit.eval.protocols import paper_columns

        paper_columns(config.eval.metrics)
    check_available(config.logging.loggers)  # every rank, before anything is written
    info = dist_utils.setup(resolve_device(config.device).type, config.distributed.timeout_s)
    try:
        ctx = _open_run(config, Path(out_dir), wanted, resume, feature_cache_dir, progress, plain_progress, on_step,
                        info)
        failed = True
        try:
            result = _train_and_evaluate(ctx, config, out_dir, wanted, model_factory, resume, from_run, splits,
                                         evaluate, t_start)
            failed = False
        finally:
            ctx.trackers.close(failed=failed)
        return result
    finally:
        dist_utils.teardown(info)  # a group this run created is destroyed, on errors too


def _train_and_evaluate(ctx: RunContext, config: CoraConfig, out_dir: str | Path, wanted: list[int],
                        model_factory: ModelFactory, resume: bool, from_run: str | Path | None,
                        splits: Splits | None, evaluate: bool, t_start: float) -> RunResult:
    """Build the model, train the stages, evaluate (every rank captions its shard of the test
    split; rank 0 scores) and write ``summary.md``."""
    seed_everything(config.seed)
    model = model_factory(config, ctx.device)
    splits = splits if splits is not None else load_splits(config)
    train_items = training_items(splits.train, config.data.train_targets, config.seed)
    result = RunResult(Path(out_dir), data=_record_data(ctx, splits, train_items))
    _record_model(ctx, model, wanted[0], from_run)
    _train_stages(ctx, model, wanted, splits, resume, result, train_items)
    if evaluate and max(wanted) >= 2:
        result.scores = report.evaluate_test(model, splits, ctx)
    dist_utils.barrier(ctx.dist)
    result.seconds = time.perf_counter() - t_start
    result.cache_stats = dict(ctx.cache_stats)
    ctx.trackers.log_final(result.scores, result.diagnostics)
    if ctx.dist.is_main:
        report.write_summary(ctx.rd, config, result, splits, model.plugin_metadata())
    return result


__all__ = ["NonFiniteLossError", "RunResult", "StageResult", "run", "seed_everything"]
