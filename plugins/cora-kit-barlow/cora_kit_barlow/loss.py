"""Barlow Twins overlap loss (Zbontar et al., 2021) on exact overlap correspondences.

For matched features ``z1, z2`` ``[M, D]`` (patch of view a, its partner in view b),
standardised over the M matches (``(z - mean) / sqrt(var + eps)``, biased variance, as
batch norm does), the cross-correlation ``C = z1^T z2 / M`` ``[D, D]``;
loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2.
"""

from __future__ import annotations

import torch

from cora_kit.geometry import Correspondences
from cora_kit.interfaces import Grid, OverlapLoss, PluginParams
from cora_kit.overlap import matched_features, normalized_feature_std


class BarlowParams(PluginParams):
    lambda_offdiag: float = 5e-3
    eps: float = 1e-5
    sampling: str = "bilinear"


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 5e-3, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``z1, z2`` ``[M, D]`` -> (loss scalar, cross-correlation diagonal ``[D]``).

    Computed in float32 (or wider); finite for constant inputs (eps in the std).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow expects two [M, D] tensors; got {list(z1.shape)} and {list(z2.shape)}")
    dtype = torch.promote_types(z1.dtype, torch.float32)  # float32 accumulation under bf16
    z1, z2 = z1.to(dtype), z2.to(dtype)
    m = z1.shape[0]
    if m < 2:
        raise ValueError(f"barlow needs at least 2 matches; got {m}")
    z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    c = z1.T @ z2 / m
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambda_offdiag * off, diag


class BarlowTwinsLoss(OverlapLoss):
    """``features [B,V,P,D]`` + correspondences -> Barlow Twins loss over all matches."""

    head_dropout = 0.0

    def __init__(self, lambda_offdiag: float = 5e-3, eps: float = 1e-5, sampling: str = "bilinear") -> None:
        super().__init__()
        if sampling not in ("bilinear", "nearest"):
            raise ValueError(f"sampling must be 'bilinear' or 'nearest'; got {sampling!r}")
        self.lambda_offdiag, self.eps, self.sampling = lambda_offdiag, eps, sampling

    def forward(
        self, features: torch.Tensor, correspondences: Correspondences, grid: Grid
    ) -> tuple[torch.Tensor, dict[str, float]]:
        src, dst = matched_features(features, correspondences, grid, sampling=self.sampling)
        loss, diag = barlow_twins_loss(
            src.reshape(-1, src.shape[-1]), dst.reshape(-1, dst.shape[-1]), self.lambda_offdiag, self.eps
        )
        std = float(normalized_feature_std(src.reshape(-1, src.shape[-1]).detach()))
        return loss, {"barlow_diag_mean": float(diag.detach().mean()), "feat_std": std}
