"""The "native" baseline: no overlap alignment (the paper's Native rows).

Returns a zero loss that stays attached to the graph (so a training step runs and
gives zero gradients) and no alignment terms; tables can show Native vs CORA.
"""

from __future__ import annotations

import torch

from cora_kit.geometry import Correspondences
from cora_kit.interfaces import Grid, OverlapLoss, PluginParams


class NoneParams(PluginParams):
    """``none`` takes no parameters."""


class NoOverlapLoss(OverlapLoss):
    """``features [B,V,P,D]`` -> ``(0.0, {})``; correspondences are only shape-checked."""

    head_dropout = 0.0

    def forward(
        self, features: torch.Tensor, correspondences: Correspondences, grid: Grid
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if features.dim() != 4 or features.shape[2] != grid[0] * grid[1]:
            raise ValueError(
                f"loss 'none' expects features [B,V,{grid[0] * grid[1]},D]; got {list(features.shape)}"
            )
        zero = features.new_zeros((), dtype=torch.promote_types(features.dtype, torch.float32))
        if features.requires_grad:
            zero = zero + 0.0 * features.sum()
        return zero, {}
