"""DenseCL-style overlap loss (Wang et al., 2021): InfoNCE on the overlap only.

For every matched pair (source patch ``a_i``, partner ``b_i`` sampled in the other
view), symmetric NT-Xent with temperature ``t`` (seed 0.07) and negatives = the other
positions of the same (panorama, pair) overlap, or of the whole batch
(``negatives="batch"``, equal to lightly's ``NTXentLoss`` on the flattened pairs)::

    l(a_i) = -log( exp(a_i.b_i / t) / (sum_j exp(a_i.b_j / t) + sum_{j != i} exp(a_i.a_j / t)) )

No within-tile term and one head pass (head dropout 0.0 in the seed's DenseCL path).
"""

from __future__ import annotations

from typing import Literal

import torch

from cora_kit.geometry import Correspondences
from cora_kit.interfaces import Grid, OverlapLoss, PluginParams
from cora_kit.overlap import matched_features, normalized_feature_std, pair_sizes
from cora_kit_builtins.losses.infonce import grouped_ntxent, overlap_groups


class DenseCLParams(PluginParams):
    temperature: float = 0.07
    negatives: Literal["pair", "batch"] = "pair"
    sampling: Literal["bilinear", "nearest"] = "bilinear"
    collapse_std: float = 0.1


class DenseCLLoss(OverlapLoss):
    """``features [B,V,P,D]`` + correspondences -> overlap-only InfoNCE."""

    head_dropout = 0.0

    def __init__(
        self,
        temperature: float = 0.07,
        negatives: str = "pair",
        sampling: str = "bilinear",
        collapse_std: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"densecl temperature must be > 0; got {temperature}")
        if negatives not in ("pair", "batch"):
            raise ValueError(f"negatives must be 'pair' or 'batch'; got {negatives!r}")
        self.temperature, self.negatives = temperature, negatives
        self.sampling, self.collapse_std = sampling, collapse_std

    def forward(
        self, features: torch.Tensor, correspondences: Correspondences, grid: Grid
    ) -> tuple[torch.Tensor, dict[str, float]]:
        src, dst = matched_features(features, correspondences, grid, sampling=self.sampling)
        ga, gb, mask = overlap_groups(src, dst, pair_sizes(correspondences), self.negatives)
        loss, acc = grouped_ntxent(ga, gb, self.temperature, mask)
        std = float(normalized_feature_std(src.reshape(-1, src.shape[-1]).detach()))
        return loss, {
            "overlap": float(loss.detach()),
            "overlap_acc": float(acc),
            "feat_std": std,
            "collapse": float(std < self.collapse_std),
        }
