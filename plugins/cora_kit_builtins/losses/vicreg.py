"""VICReg overlap loss (Bardes et al., 2022, arXiv:2105.04906) on exact correspondences.

Matched features ``z_a = src``, ``z_b = dst`` (``cora_kit.overlap.matched_features``)::

    inv = mean((z_a - z_b)^2)
    var(x) = mean_d relu(1 - sqrt(Var(x_d) + eps))          (unbiased variance)
    cov(x) = sum_{i != j} C(x)_ij^2 / D,   C = x_c^T x_c / (n - 1)
    loss = lam * inv + mu * (var(z_a) + var(z_b)) / 2 + nu * (cov(z_a) + cov(z_b))

Seed weights: lam = 25, mu = 25, nu = 1.

- ``batchwise``: statistics over the batch of all ``B*M`` matched tokens
  (identical to lightly's ``VICRegLoss`` on the flattened pairs).
- ``pairwise`` (seed default): statistics over the tokens of each (panorama, pair)
  group, averaged over groups; this forces spatial diversity inside each overlap.
  Groups with fewer than 2 matches have no variance and are left out of var/cov.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from cora_kit.geometry import Correspondences
from cora_kit.interfaces import Grid, OverlapLoss, PluginParams
from cora_kit.overlap import group_by_pair, matched_features, normalized_feature_std, pair_sizes


class VICRegParams(PluginParams):
    variant: Literal["batchwise", "pairwise"] = "pairwise"
    inv_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    eps: float = 1e-4
    sampling: Literal["bilinear", "nearest"] = "bilinear"
    collapse_std: float = 0.1


def variance_term(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x [N,D]`` -> mean_d relu(1 - sqrt(Var_unbiased(x_d) + eps))."""
    return F.relu(1.0 - torch.sqrt(x.var(dim=0) + eps)).mean()


def covariance_term(x: torch.Tensor) -> torch.Tensor:
    """``x [N,D]`` -> sum of squared off-diagonal covariances / D."""
    n, d = x.shape
    xc = x - x.mean(dim=0)
    cov = xc.T @ xc / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def grouped_var_cov(
    groups: torch.Tensor, mask: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group VICReg variance and covariance terms, averaged over groups.

    ``groups [G,L,D]`` (zero-padded), ``mask [G,L]`` or None. Covariance uses
    ``||X^T X||_F = ||X X^T||_F`` so no ``[G,D,D]`` tensor is formed when ``L < D``.
    """
    g, length, d = groups.shape
    if mask is None:
        counts = torch.full((g,), float(length), device=groups.device)
        m = None
    else:
        m = mask.to(groups.dtype).unsqueeze(-1)  # [G,L,1]
        counts = mask.sum(dim=1).to(groups.dtype)
    keep = counts >= 2
    if not bool(keep.any()):
        raise ValueError("pairwise VICReg needs at least one pair with 2 or more matches")
    mean = groups.sum(dim=1, keepdim=True) / counts[:, None, None]
    xc = groups - mean
    if m is not None:
        xc = xc * m
    denom = (counts - 1).clamp(min=1)[:, None]
    var = xc.pow(2).sum(dim=1) / denom  # [G,D]
    var_g = F.relu(1.0 - torch.sqrt(var + eps)).mean(dim=1)
    if length < d:
        gram = xc @ xc.transpose(1, 2)
        fro2 = gram.pow(2).sum(dim=(1, 2)) / denom[:, 0] ** 2
    else:
        cov = xc.transpose(1, 2) @ xc
        fro2 = cov.pow(2).sum(dim=(1, 2)) / denom[:, 0] ** 2
    cov_g = (fro2 - var.pow(2).sum(dim=1)) / d
    return var_g[keep].mean(), cov_g[keep].mean()


class VICRegLoss(OverlapLoss):
    """``features [B,V,P,D]`` + correspondences -> VICReg loss (see module docstring)."""

    head_dropout = 0.0

    def __init__(
        self,
        variant: str = "pairwise",
        inv_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        sampling: str = "bilinear",
        collapse_std: float = 0.1,
    ) -> None:
        super().__init__()
        if variant not in ("batchwise", "pairwise"):
            raise ValueError(f"vicreg variant must be 'batchwise' or 'pairwise'; got {variant!r}")
        if eps <= 0:
            raise ValueError(f"vicreg eps must be > 0 (keeps sqrt finite); got {eps}")
        self.variant, self.sampling = variant, sampling
        self.inv_weight, self.var_weight, self.cov_weight = inv_weight, var_weight, cov_weight
        self.eps, self.collapse_std = eps, collapse_std

    def terms(
        self, z_a: torch.Tensor, z_b: torch.Tensor, sizes: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Matched ``[B,M,D]`` pairs -> ``(inv, var, cov)`` (float32 or wider)."""
        inv = F.mse_loss(z_a, z_b)
        if self.variant == "batchwise":
            a, b = z_a.reshape(-1, z_a.shape[-1]), z_b.reshape(-1, z_b.shape[-1])
            if a.shape[0] < 2:
                raise ValueError("batchwise VICReg needs at least 2 matched tokens")
            var = 0.5 * (variance_term(a, self.eps) + variance_term(b, self.eps))
            cov = covariance_term(a) + covariance_term(b)
            return inv, var, cov
        ga, mask = group_by_pair(z_a, sizes)
        gb, _ = group_by_pair(z_b, sizes)
        var_a, cov_a = grouped_var_cov(ga, mask, self.eps)
        var_b, cov_b = grouped_var_cov(gb, mask, self.eps)
        return inv, 0.5 * (var_a + var_b), cov_a + cov_b

    def forward(
        self, features: torch.Tensor, correspondences: Correspondences, grid: Grid
    ) -> tuple[torch.Tensor, dict[str, float]]:
        z_a, z_b = matched_features(features, correspondences, grid, sampling=self.sampling)
        inv, var, cov = self.terms(z_a, z_b, pair_sizes(correspondences))
        loss = self.inv_weight * inv + self.var_weight * var + self.cov_weight * cov
        flat = torch.cat([z_a, z_b], dim=1).reshape(-1, z_a.shape[-1]).detach()
        std = float(normalized_feature_std(flat))
        return loss, {
            "inv": float(inv.detach()),
            "var": float(var.detach()),
            "cov": float(cov.detach()),
            "feat_std": std,
            "collapse": float(std < self.collapse_std),
        }
