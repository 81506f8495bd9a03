"""The seed's three-stage freeze schedule (CORA-architecture.md, three-stage table).

``SCHEDULE`` says in which stages each parameter group trains, ``FROZEN_MODULES`` which
modules stay in eval mode while a stage trains. ``FreezeSchedule`` is the part of
``CoraModel`` that applies and checks it: ``set_stage`` freezes everything else,
``param_groups`` feeds AdamW, ``trainable_state_dict`` is what a stage checkpoint holds.
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.config import CoraConfig, StageConfig
from cora_kit.errors import CheckpointError
from cora_kit.interfaces import LLMAdapter, VisionEncoder

#: parameter group -> stages in which it trains (the seed's table; encoder: last k blocks)
SCHEDULE: dict[str, tuple[int, ...]] = {
    "encoder_blocks": (1,),
    "resampler": (1, 2),
    "overlap_head": (1,),
    "loss": (1,),
    "projector": (2, 3),
    "lora": (3,),
}
#: modules that are entirely frozen in a stage (kept in eval mode while training)
FROZEN_MODULES: dict[int, tuple[str, ...]] = {
    1: ("projector", "llm"),
    2: ("encoder", "overlap_head", "loss_fn", "llm"),
    3: ("encoder", "resampler", "overlap_head", "loss_fn"),
}
STAGES = (1, 2, 3)
#: groups a stage cannot train without (an empty one breaks the schedule)
REQUIRED_GROUPS: dict[int, tuple[str, ...]] = {1: ("overlap_head",), 2: ("projector",), 3: ("projector", "lora")}


def check_stage(stage: int) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3; got {stage!r}")
    return stage


class FreezeSchedule(nn.Module):
    """Mixin of ``CoraModel``: the schedule applied to its components."""

    config: CoraConfig
    encoder: VisionEncoder
    resampler: nn.Module
    overlap_head: nn.Module
    loss_fn: nn.Module
    projector: nn.Module
    llm: LLMAdapter
    stage: int | None
    #: modules whose group the stage config holds (lr scale 0): like frozen ones, eval mode
    held_modules: tuple[str, ...] = ()

    def encoder_blocks(self) -> int:
        """Encoder blocks that train in Stage 1 (seed: the last 2)."""
        return self.config.model.encoder.num_trainable_blocks

    def _full_llm(self, stage: int) -> bool:
        return self.config.model.llm.trainable == "full" and stage in (2, 3)

    def stage_groups(self, stage: int) -> dict[str, list[nn.Parameter]]:
        """Parameters that train in ``stage``, by group (the seed's table)."""
        check_stage(stage)
        groups: dict[str, list[nn.Parameter]] = {
            "encoder_blocks": list(self.encoder.trainable_block_parameters(self.encoder_blocks())),
            "resampler": list(self.resampler.parameters()),
            "overlap_head": list(self.overlap_head.parameters()),
            "loss": list(self.loss_fn.parameters()),
            "projector": list(self.projector.parameters()),
            "lora": list(self.llm.lora_parameters()),
        }
        chosen = {name: params for name, params in groups.items() if stage in SCHEDULE[name]}
        if self._full_llm(stage):
            lora = {id(p) for p in groups["lora"]}
            chosen["llm_full"] = [p for p in self.llm.parameters() if id(p) not in lora]
        return chosen

    def set_stage(self, stage: int) -> dict[str, int]:
        """Freeze everything but ``stage``'s groups; returns ``{group: n_trainable}``.

        Raises ``RuntimeError`` if the result breaks the schedule (a frozen component with
        trainable weights, or no LoRA / projector weights where the seed trains them).
        """
        groups = self.stage_groups(stage)
        # zero-initialised LoRA is an exact no-op: skip its compute before Stage 3
        self.llm.set_lora_active(stage == 3 or not self.llm.lora_is_zero())
        for p in self.parameters():
            p.requires_grad_(False)
        allowed: set[int] = set()
        for params in groups.values():
            for p in params:
                p.requires_grad_(True)
                allowed.add(id(p))
        wrong = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in allowed]
        if wrong:
            raise RuntimeError(f"stage {stage}: parameters outside the schedule would train: {wrong[:3]}")
        counts = {name: sum(p.numel() for p in params) for name, params in groups.items()}
        missing = [g for g in REQUIRED_GROUPS[stage] if counts.get(g, 0) == 0]
        if missing:
            raise RuntimeError(f"stage {stage}: the schedule trains {', '.join(missing)} but it has no parameters")
        self.stage = stage
        self.held_modules = ()
        self.train(self.training)
        return counts

    def train(self, mode: bool = True) -> FreezeSchedule:
        """Like ``nn.Module.train``; modules frozen in the current stage stay in eval mode."""
        super().train(mode)
        if mode and self.stage is not None:
            for name in (*FROZEN_MODULES[self.stage], *self.held_modules):
                if name == "llm" and self._full_llm(self.stage):
                    continue
                module = getattr(self, name)
                if isinstance(module, nn.Module):
                    module.eval()
        return self

    def param_groups(self, stage: int, stage_cfg: StageConfig) -> list[dict]:
        """AdamW groups; the resampler's lr is ``lr * resampler_lr_scale`` (seed Stage 2), the
        projector's ``lr * projector_lr_scale``. Scale 0 holds the group: no optimizer group,
        its parameters stop requiring gradients and its module stays in eval mode, as a frozen
        one (call after ``set_stage``)."""
        scales = {"resampler": stage_cfg.resampler_lr_scale, "projector": stage_cfg.projector_lr_scale}
        out = []
        held = []
        for name, params in self.stage_groups(stage).items():
            scale = scales.get(name, 1.0)
            if scale == 0:
                held.append(name)
                for p in params:
                    p.requires_grad_(False)
            if not params or scale == 0:
                continue
            out.append({"params": params, "lr": stage_cfg.lr * scale, "weight_decay": stage_cfg.weight_decay, "name": name})
        if stage == self.stage:  # (engine checks every stage's groups before the first runs)
            self.held_modules = tuple(held)
            self.train(self.training)
        return out

    # -- checkpoints -----------------------------------------------------------------

    def trainable_state_dict(self, stage: int) -> dict[str, torch.Tensor]:
        """``{parameter name: tensor}`` of what trains in ``stage`` (detached)."""
        ids = {id(p) for params in self.stage_groups(stage).values() for p in params}
        return {n: p.detach() for n, p in self.named_parameters() if id(p) in ids}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Copy ``state`` into the model; unknown names (strict) and shape mismatches are
        ``CheckpointError``s naming the parameter."""
        params = dict(self.named_parameters())
        for name, value in state.items():
            p = params.get(name)
            if p is None:
                if strict:
                    raise CheckpointError(
                        f"checkpoint parameter '{name}' does not exist in this model"
                        " (saved with another model config or plugin?)"
                    )
                continue
            if tuple(value.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"checkpoint parameter '{name}' has shape {list(value.shape)}; the model expects {list(p.shape)}"
                )
        with torch.no_grad():
            for name, value in state.items():
                if name in params:
                    params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))


__all__ = ["FROZEN_MODULES", "REQUIRED_GROUPS", "SCHEDULE", "STAGES", "FreezeSchedule", "check_stage"]
