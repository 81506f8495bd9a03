"""Stages 2-3 with a resampler that does not train: each image's latent made once.

In Stage 3 the resampler is frozen (the seed's table); in Stage 2 a config can hold it
(``stages.stage2.resampler_lr_scale: 0``, the tiny preset). Either way it runs in eval mode
without gradients, so an image's latent ``[V,P',D]`` is the same at every step of the stage:
``HeldLatents`` makes it once from the frozen features and keeps it in memory, instead of
running the resampler on every micro-batch (the tiny preset's Stage 2 sees each image 20
times). A stage whose latents would not fit ``budget_bytes`` runs the resampler per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cora_kit.train.protocol import CoraModelLike
from cora_kit.train.stages import FeatureProvider

#: default memory for the kept latents of one stage
DEFAULT_BUDGET_BYTES = 1 << 30


def resampler_trains(model: CoraModelLike) -> bool:
    """True if any resampler parameter requires a gradient (call after ``param_groups``)."""
    return any(p.requires_grad for p in model.resampler.parameters())


class HeldLatents:
    """``latents(items) -> [B,V,P',D]`` for a stage (2 or 3) whose resampler is held.

    ``provider`` serves the frozen features ``[B,V,P,Dv]``; ``context`` (a callable
    returning a context manager, e.g. the run's autocast) wraps the resampler pass so the
    latent is what the step itself would have computed. ``passes`` counts images run
    through the resampler.
    """

    def __init__(self, model: CoraModelLike, provider: FeatureProvider, context: Any) -> None:
        self.model = model
        self.provider = provider
        self.context = context
        self.kept: dict[str, torch.Tensor] = {}
        self.passes = 0

    @classmethod
    def for_stage(cls, model: CoraModelLike, stage: int, provider: FeatureProvider, items: Sequence[dict[str, Any]],
                  context: Any, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> tuple[HeldLatents | None, str]:
        """(``HeldLatents``, why) when ``stage``'s resampler is held and the latents of the
        distinct images of ``items`` fit ``budget_bytes``; else ``(None, why not)``."""
        if stage == 1 or resampler_trains(model):
            return None, "the resampler trains: run per step"
        if model.resampler.training:
            return None, "the resampler runs in training mode: run per step"
        held = cls(model, provider, context)
        n_images = len({provider.item_hash(i) for i in items})
        one = held.latents(items[:1])
        need = n_images * one[0].numel() * one.element_size()
        if need > budget_bytes:
            return None, (f"the latents of {n_images} images need {need / 2**20:.0f} MiB"
                          f" > {budget_bytes / 2**20:.0f} MiB: run per step")
        return held, f"each image's latent made once ({n_images} images, {need / 2**20:.1f} MiB)"

    @torch.no_grad()
    def latents(self, items: Sequence[dict[str, Any]]) -> torch.Tensor:
        """``[B,V,P',D]`` on the provider's device; made (eval mode, no grad) where missing."""
        hashes = [self.provider.item_hash(i) for i in items]
        todo: dict[str, dict[str, Any]] = {}
        for h, item in zip(hashes, items, strict=True):
            if h not in self.kept and h not in todo:
                todo[h] = item
        if todo:
            if self.model.resampler.training:
                raise RuntimeError("HeldLatents: the resampler is in training mode; a held or frozen one runs in eval mode")
            keys = list(todo)
            feats = self.provider.features([todo[h] for h in keys])
            with self.context():
                latent = self.model.resample(self.model.encode_trainable(feats, self.provider.stage))
            self.kept.update(zip(keys, latent, strict=True))
            self.passes += len(keys)
        return torch.stack([self.kept[h] for h in hashes])


__all__ = ["DEFAULT_BUDGET_BYTES", "HeldLatents", "resampler_trains"]
