"""One stage's training, in named steps (``StageRun.run``):

1. ``prepare``: apply the freeze schedule, seed this rank's random streams, split the
   effective batch over the ranks (``split_for_world``), fill the frozen-feature cache,
   and with ``--batch-size auto`` pick the micro-batch;
2. ``build_optimizer``: AdamW over the stage's groups, warmup + cosine schedule;
3. ``restore``: with ``--resume``, weights, optimizer, scheduler, RNG and data position of
   the newest complete checkpoint (said); without one, the stage starts over (what an
   interrupted first save left is removed, its metric rows dropped);
4. ``keep_latents``: in stages 2-3 with a resampler that does not train, each image's
   latent is made once (``HeldLatents``); ``wrap``: the step function as one module (DDP
   all-reduces its gradients);
5. ``loop``: optimizer steps of ``grad_accum`` micro-batches (``accumulate``), clipping,
   logging, validation at each epoch end (``validate``), periodic checkpoints (``save``);
   Ctrl-C saves one before leaving, a non-finite loss stops the stage and keeps the last good
   one (``non_finite``: a checkpoint is good once its weights gave a finite loss);
6. ``finish``: final weights + ``done.json``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from cora_kit.config import StageConfig, to_yaml
from cora_kit.errors import CheckpointError, CoraKitError
from cora_kit.train import checkpoint as ckpt
from cora_kit.train import distributed as dist_utils
from cora_kit.train.context import NonFiniteLossError, RunContext, StageResult, Validator, autocast, seed_everything
from cora_kit.train.data import epoch_items
from cora_kit.train.progress import StageProgress
from cora_kit.train.protocol import CoraModelLike
from cora_kit.train.held_latents import HeldLatents
from cora_kit.train.stages import (
    LATENT_STEP_FNS,
    STEP_FNS,
    FeatureProvider,
    epoch_order,
    kind_grouped_order,
    plan_steps,
    stage1_views,
    lr_factor,
)


class StepModule(torch.nn.Module):
    """Wraps a stage step so DDP sees one ``forward`` (gradient all-reduce hooks); with
    ``on_latent`` it takes the resampler's output (``LATENT_STEP_FNS``), else the features."""

    def __init__(self, model: CoraModelLike, stage: int, cfg: StageConfig, on_latent: bool = False) -> None:
        super().__init__()
        self.model = model
        self.fn = LATENT_STEP_FNS[stage] if on_latent else STEP_FNS[stage]
        self.cfg = cfg

    def forward(self, inputs: torch.Tensor, items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.fn(self.model, inputs, items, self.cfg)


def auto_batch(ctx: RunContext, model: CoraModelLike, stage: int, cfg: StageConfig, provider: FeatureProvider,
               items: Sequence[dict[str, Any]]) -> StageConfig:
    """``--batch-size auto``: split this rank's share of the stage's effective batch by what
    fits (every rank searches, all take the smallest choice); the choice is printed and
    written into the run's config.yaml."""
    from cora_kit.train.autobatch import plan_split, search_stage_batch

    sample = provider.features(items[:1])
    fn = STEP_FNS[stage]

    def step(b: int) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        try:
            with autocast(ctx.device, ctx.config.precision):
                loss, _ = fn(model, sample.expand(b, *sample.shape[1:]).clone(), [items[0]] * b, cfg)
            loss.backward()
        finally:
            model.zero_grad(set_to_none=True)
        return loss

    with torch.random.fork_rng(devices=[ctx.device.index or 0] if ctx.device.type == "cuda" else []):
        plan = search_stage_batch(step, cfg.batch_size, cfg.grad_accum, ctx.dist.world_size, ctx.device.type,
                                  exclude=list(model.parameters()))
    agreed = dist_utils.all_reduce_min(plan.micro_batch, ctx.dist, ctx.device)  # one choice for all ranks
    if agreed != plan.micro_batch:
        plan = plan_split(cfg.batch_size * cfg.grad_accum, agreed, ctx.dist.world_size, plan.found,
                          plan.rule + "; the smallest choice over the ranks")
    new = cfg.model_copy(update={"batch_size": plan.micro_batch, "grad_accum": plan.grad_accum})
    ctx.say(
        f"stage {stage}: --batch-size auto: micro-batch {plan.micro_batch} x accumulation {plan.grad_accum}"
        f" x {plan.world_size} process(es) = effective {plan.effective} (unchanged); {plan.rule}"
    )
    # config.yaml keeps the effective batch as one process would run it
    one_process = new.model_copy(update={"grad_accum": new.grad_accum * ctx.dist.world_size})
    stages = ctx.config.stages.model_copy(update={f"stage{stage}": one_process})
    ctx.config = ctx.config.model_copy(update={"stages": stages})
    ctx.rd.write_text(ctx.rd.config, to_yaml(ctx.config))
    return new


class StageRun:
    """Train one stage of ``model`` on ``items`` (see the module docstring for the steps)."""

    def __init__(self, ctx: RunContext, model: CoraModelLike, stage: int, items: Sequence[dict[str, Any]], resume: bool,
                 validator: Validator | None = None) -> None:
        self.ctx, self.model, self.stage, self.items, self.resume = ctx, model, stage, items, resume
        self.validator = validator
        self.validation: dict[str, float] = {}
        self._epoch_items: Sequence[dict[str, Any]] = items
        self.cfg: StageConfig = getattr(ctx.config.stages, f"stage{stage}")
        self.stage_dir = ctx.rd.stage(stage)
        self.step = 0
        self.epoch = 0
        self.resumed_from: int | None = None
        self.last_ckpt: int | None = None
        #: the last checkpoint's weights have not given a finite loss yet
        self.unconfirmed = False
        self.metrics: dict[str, float] = {}
        self.held: HeldLatents | None = None
        self._orders: dict[int, list[int]] = {}
        self._window: list[float] = []

    def run(self) -> StageResult:
        t0 = time.perf_counter()
        trainable = self.prepare()
        self.build_optimizer()
        self.restore()
        self.model.train()
        self.held = self.keep_latents()
        self.runner = self.wrap()
        self.loop()
        return self.finish(trainable, time.perf_counter() - t0)

    # -- 1-4: before the first step -------------------------------------------------------

    def prepare(self) -> dict[str, int]:
        """Freeze schedule, seed, feature cache (and the auto micro-batch); ``{group: n}``."""
        ctx, stage = self.ctx, self.stage
        trainable = self.model.set_stage(stage)
        # a group the stage config holds (lr scale 0) gets no optimizer group and does not train
        optimized = {g["name"] for g in self.model.param_groups(stage, self.cfg)}
        for name in [k for k in trainable if k not in optimized]:
            trainable.pop(name)
            ctx.say(f"stage {stage}: {name} keeps its weights ({name}_lr_scale 0)")
        groups = ", ".join(f"{k} {v:,}" for k, v in trainable.items())
        ctx.say(f"stage {stage}: trainable groups: {groups} (total {sum(trainable.values()):,})")
        if not self.items:
            raise CoraKitError(f"stage {stage}: the training split is empty")
        if self.cfg.kind_grouped_epochs:
            unnamed = next((it for it in self.items if it.get("kind") is None), None)
            if unnamed is not None:
                raise CoraKitError(f"stage {stage}: kind_grouped_epochs needs a query kind on every training item;"
                                   f" item {unnamed.get('id')!r} has none (the data has no kind column?)")
        # per-rank random streams (dropout, augmentation); rank 0 keeps the one-process seed
        seed_everything(dist_utils.rank_seed(ctx.config.seed * 1000 + stage, ctx.dist.rank))
        self.split_for_world()
        views = stage1_views(self.model) if stage == 1 else None  # seed: Stage 1 sees the tiles only
        self.provider = FeatureProvider(
            self.model, stage, str(ctx.cache_dir), ctx.device, ctx.config.eval.batch_size, views, stats=ctx.cache_stats,
            dtype=ctx.config.feature_cache.dtype, num_workers=ctx.config.data.num_workers,
        )
        n_new = self.provider.fill(self.items[ctx.dist.rank :: ctx.dist.world_size])
        dist_utils.barrier(ctx.dist)
        self.provider.cache.refresh()
        ctx.say(f"stage {stage}: feature cache {self.provider.cache.dir} ({n_new} images encoded, {len(self.provider.cache)} cached)")
        if ctx.config.auto_batch:
            self.cfg = auto_batch(ctx, self.model, stage, self.cfg, self.provider, self.items)
        return trainable

    def split_for_world(self) -> None:
        """The configured effective batch over ``world_size`` processes: each rank runs the
        accumulation divided by the world size (else a smaller micro-batch); one process
        and N processes then take the same optimizer steps on the same items."""
        ctx, cfg = self.ctx, self.cfg
        world = ctx.dist.world_size
        micro, accum = dist_utils.split_for_world(cfg.batch_size, cfg.grad_accum, world, f"stage {self.stage}: ")
        if (micro, accum) != (cfg.batch_size, cfg.grad_accum):
            ctx.say(f"stage {self.stage}: {world} processes: micro-batch {micro} x accumulation {accum} per rank"
                    f" = effective {micro * accum * world} (configured {cfg.batch_size} x {cfg.grad_accum})")
            self.cfg = cfg.model_copy(update={"batch_size": micro, "grad_accum": accum})

    def build_optimizer(self) -> None:
        """AdamW over the stage's parameter groups, warmup + cosine (or WSD) over the planned steps."""
        cfg = self.cfg
        self.micro, self.total = plan_steps(len(self.items), cfg, self.ctx.dist.world_size)
        groups = self.model.param_groups(self.stage, cfg)  # not empty: engine._check_every_stage_trains
        self.params = [p for g in groups for p in g["params"]]
        self.optim = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, lr_factor(cfg, self.total))

    def restore(self) -> None:
        """With ``--resume``: everything needed to continue exactly from the newest complete
        checkpoint (every file checked against its sha256), or a clean start of the stage."""
        if not self.resume:
            return
        ctx, stage_dir = self.ctx, self.stage_dir
        ref = ckpt.find_checkpoint(stage_dir)
        if ref is None:
            if stage_dir.exists():  # killed before its first checkpoint was complete
                dropped = ckpt.discard_incomplete(stage_dir) if ctx.rd.writer else []
                ctx.rd.truncate_metrics(self.stage, 0)
                ctx.say(f"stage {self.stage}: no complete checkpoint in {stage_dir}"
                        f"{' (an interrupted save was discarded)' if dropped else ''}; the stage starts from step 0")
            return
        weights, state = ckpt.load_checkpoint(stage_dir, ref)
        self.model.load_trainable_state_dict(weights, strict=True)
        self.optim.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])  # rank 0's streams (it writes checkpoints); the others derive theirs
        self.step = self.resumed_from = self.last_ckpt = int(state["step"])
        self.unconfirmed = True
        if self.ctx.dist.rank:
            seed_everything(dist_utils.rank_seed(self.ctx.config.seed * 1000 + self.stage + 7919 * self.step,
                                                 self.ctx.dist.rank))
        if int(state["total_steps"]) != self.total:
            raise CheckpointError(
                f"{stage_dir}: checkpoint planned {state['total_steps']} steps, this config plans {self.total};"
                " resume needs the same config"
            )
        ctx.rd.truncate_metrics(self.stage, self.step)
        ctx.say(f"stage {self.stage}: resumed at step {self.step}/{self.total} from {ref.path}")

    def keep_latents(self) -> HeldLatents | None:
        """Stages 2-3 (model in training mode): ``HeldLatents`` when the resampler does not
        train and runs in eval mode (each image's latent made once), else None; said either way."""
        ctx = self.ctx
        if self.stage == 1:
            return None
        held, why = HeldLatents.for_stage(
            self.model, self.stage, self.provider, self.items[ctx.dist.rank :: ctx.dist.world_size],
            lambda: autocast(ctx.device, ctx.config.precision),
        )
        ctx.say(f"stage {self.stage}: resampler latents: {why}")
        return held

    def wrap(self) -> torch.nn.Module:
        """The stage step as a module; under torchrun, DDP-wrapped."""
        module = StepModule(self.model, self.stage, self.cfg, on_latent=self.held is not None)
        if not self.ctx.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = self.ctx.device
        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    # -- 5: the optimizer steps ----------------------------------------------------------------

    def loop(self) -> None:
        """Optimizer steps until ``total``; Ctrl-C saves a checkpoint and re-raises."""
        ctx, stage = self.ctx, self.stage
        rng = ckpt.rng_state()
        with StageProgress(stage, self.total, enabled=ctx.progress and ctx.dist.is_main, force_plain=ctx.plain) as bar:
            bar.update(self.step, 0, {})
            self.epoch = (self.step * self.cfg.grad_accum) // self.micro
            try:
                while self.step < self.total:
                    rng = ckpt.rng_state()  # the state a resume from `step` must restore
                    self.optimizer_step(bar)
            except KeyboardInterrupt:
                self.save(self.step, rng)
                bar.message(f"stage {stage}: interrupted; checkpoint saved at step {self.step} ({self.stage_dir}); use --resume")
                raise

    def optimizer_step(self, bar: StageProgress) -> None:
        """One optimizer step, then its logging, epoch line, checkpoint and callback."""
        cfg = self.cfg
        self.optim.zero_grad(set_to_none=True)
        logs, n_items = self.accumulate()
        grad_norm = None
        if cfg.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
        lr = self.optim.param_groups[0]["lr"]
        self.optim.step()
        self.sched.step()
        self.step += 1
        self._window.append(logs["loss"])
        self.metrics = {**logs, "lr": lr, **({"grad_norm": grad_norm} if grad_norm is not None else {})}
        if self.logs_now():  # what is logged covers the whole effective batch: averaged over ranks
            self.metrics = dist_utils.mean_over_ranks(
                {**self.metrics, "loss_mean": sum(self._window) / len(self._window)}, self.ctx.dist)
        bar.update(self.step, n_items * self.ctx.dist.world_size, self.metrics)
        self.after_step(bar, lr)

    def logs_now(self) -> bool:
        """metrics.jsonl and the trackers get a row every ``log_every`` steps and at the end."""
        return self.step % self.cfg.log_every == 0 or self.step == self.total

    def accumulate(self) -> tuple[dict[str, float], int]:
        """``grad_accum`` micro-batches of the seeded item order: forward, NaN guard, backward.
        Returns the averaged logs and the number of items seen."""
        ctx, cfg = self.ctx, self.cfg
        logs: dict[str, float] = {}
        n_items = 0
        for a in range(cfg.grad_accum):
            self.epoch, idx = divmod(self.step * cfg.grad_accum + a, self.micro)
            if self.epoch not in self._orders:
                self._orders.clear()
                if self.epoch < cfg.kind_grouped_epochs:
                    self._orders[self.epoch] = kind_grouped_order(
                        [it.get("kind") for it in self.items], ctx.config.seed, self.stage, self.epoch,
                        ctx.dist.rank, ctx.dist.world_size)
                else:
                    self._orders[self.epoch] = epoch_order(
                        len(self.items), ctx.config.seed, self.stage, self.epoch, ctx.dist.rank, ctx.dist.world_size
                    )
                self._epoch_items = epoch_items(self.items, self.stage, self.epoch)  # train_targets: sample
            order = self._orders[self.epoch][idx * cfg.batch_size : (idx + 1) * cfg.batch_size]
            batch = [self._epoch_items[i] for i in order]
            inputs = self.held.latents(batch) if self.held is not None else self.provider.features(batch)
            sync = a == cfg.grad_accum - 1 or not ctx.dist.enabled
            # DDP all-reduces gradients only on the last micro-batch of a step
            with contextlib.nullcontext() if sync else self.runner.no_sync():
                with autocast(ctx.device, ctx.config.precision):
                    loss, step_logs = self.runner(inputs, batch)
                value = float(loss.detach())
                if dist_utils.any_rank(not math.isfinite(value), ctx.dist, ctx.device):
                    raise self.non_finite(value, batch)
                if self.unconfirmed:  # the checkpoint's weights gave a finite loss: older ones can go
                    if ctx.rd.writer:
                        ckpt.confirm(self.stage_dir, self.last_ckpt)
                    self.unconfirmed = False
                (loss / cfg.grad_accum).backward()
            for k, v in {"loss": value, **step_logs}.items():
                logs[k] = logs.get(k, 0.0) + v / cfg.grad_accum
            n_items += len(batch)
        return logs, n_items

    def after_step(self, bar: StageProgress, lr: float) -> None:
        """metrics.jsonl every ``log_every`` steps, the epoch line, periodic checkpoints, ``on_step``."""
        ctx, cfg, step = self.ctx, self.cfg, self.step
        if self.logs_now():
            row = {"stage": self.stage, "step": step, "epoch": self.epoch, **self.metrics, "samples_per_s": bar.throughput()}
            self._window.clear()
            ctx.rd.log_metrics(row)
            ctx.trackers.log(row)
        if (step * cfg.grad_accum) % self.micro < cfg.grad_accum or step == self.total:
            self.validation = self.validate()
            shown = {k: v for k, v in self.validation.items() if k in ("val_loss", "val_adj_cos")}
            bar.epoch_end(self.epoch, step, {"loss": self.metrics["loss"], "lr": lr, **shown})
        if step % cfg.checkpoint_every == 0 and step < self.total:
            self.save(step, ckpt.rng_state())
        if ctx.on_step is not None:
            ctx.on_step(self.stage, step, self.metrics)

    def validate(self) -> dict[str, float]:
        """End of an epoch: the validator's metrics (rank 0 computes and logs them to
        metrics.jsonl and the trackers; every rank waits), ``{}`` without a validator."""
        if self.validator is None:
            return {}
        values: dict[str, float] = {}
        if self.ctx.dist.is_main:
            with autocast(self.ctx.device, self.ctx.config.precision):
                values = self.validator(self.stage, self.epoch)
            row = {"stage": self.stage, "step": self.step, "epoch": self.epoch, **values}
            self.ctx.rd.log_metrics(row)
            self.ctx.trackers.log(row)
        dist_utils.barrier(self.ctx.dist)
        return values

    def save(self, at_step: int, rng: dict[str, Any]) -> None:
        """Checkpoint: trainable weights + optimizer, scheduler, RNG and data position (the
        previous one stays until this one's weights give a finite loss)."""
        if self.ctx.rd.writer:
            ckpt.save_checkpoint(self.stage_dir, self.model.trainable_state_dict(self.stage), {
                "step": at_step, "total_steps": self.total, "stage": self.stage, "optimizer": self.optim.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": rng,
            })
        self.last_ckpt, self.unconfirmed = at_step, True

    def non_finite(self, value: float, batch: Sequence[dict[str, Any]]) -> NonFiniteLossError:
        """The error for a NaN/Inf loss. A checkpoint whose own weights gave it (no finite
        loss since it was saved) is kept only if they give a finite loss on other items;
        else it is removed and never named as good."""
        kept, note = self.last_ckpt, ""
        if self.unconfirmed and self.last_ckpt == self.step:
            ids = {it.get("id") for it in batch}
            other = [it for it in self.items if it.get("id") not in ids][: self.cfg.batch_size]
            with torch.no_grad(), autocast(self.ctx.device, self.ctx.config.precision):
                module = StepModule(self.model, self.stage, self.cfg)
                fine = bool(other) and math.isfinite(float(module(self.provider.features(other), other)[0]))
            if fine:
                note = f"its weights give a finite loss on other items: look at items {sorted(map(str, ids))[:8]}"
            else:
                left = ckpt.discard(self.stage_dir, self.step) if self.ctx.rd.writer else None
                kept = left.step if left is not None else None
                note = f"the checkpoint of step {self.step} gives it on other items too and was removed"
        return NonFiniteLossError(self.stage, self.step + 1, value, kept, note)

    # -- 6 ------------------------------------------------------------------------------------------

    def finish(self, trainable: dict[str, int], seconds: float) -> StageResult:
        """Final weights and ``done.json`` (rank 0), then every rank meets."""
        info = {"stage": self.stage, "steps": self.step, "metrics": self.metrics, "trainable": trainable, "seconds": seconds}
        if self.ctx.rd.writer:
            ckpt.mark_done(self.stage_dir, self.model.trainable_state_dict(self.stage), info)
        dist_utils.barrier(self.ctx.dist)
        self.ctx.say(f"stage {self.stage}: done, {self.step} steps in {seconds:.0f}s, loss {self.metrics.get('loss', float('nan')):.4f}")
        return StageResult(self.stage, self.step, self.metrics, trainable, seconds, self.resumed_from,
                           validation=self.validation)


__all__ = ["StageRun", "StepModule", "auto_batch"]
