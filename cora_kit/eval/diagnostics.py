"""Stage-1 diagnostics on true overlap correspondences (seed's ``val_*`` metrics).

Given overlap-head features ``[B,V,P,D]`` of the tiles and their ``Correspondences``:

- ``adj_cos``: mean cosine of every patch and its partner (ideal 1);
- ``adj_mse``: mean squared difference of matched features (ideal 0);
- ``overlap_ret_acc``: the partner's nearest patch is the most similar of all ``P``
  tokens of the partner view (chance ``1/P``);
- ``hungarian_acc``: per (panorama, pair), scipy ``linear_sum_assignment`` on the
  cosine of sources vs partners; fraction assigned to their own partner (chance ``1/M_k``);
- ``feat_std``: per-dim std of L2-normalised head tokens times sqrt(D) (~1 healthy, 0 collapsed);
- ``eff_rank``: entropy effective rank (Roy & Vetterli, 2007) of the head tokens
  ``[N,D]``: ``exp(H(s / sum s))`` over singular values ``s`` (1 for one direction);
- ``r_eff_rank``: the same on the resampler output (NaN with a reason when not given).

A collapse warning (``CollapseWarning``, also logged) is raised when ``feat_std`` or
``eff_rank`` fall below ``CollapseThresholds``.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from cora_kit.geometry import Correspondences
from cora_kit.overlap import (
    group_by_pair,
    match_index,
    matched_features,
    normalized_feature_std,
)

logger = logging.getLogger(__name__)


class CollapseWarning(UserWarning):
    """Stage-1 features look collapsed (low feature std or effective rank)."""


@dataclass(frozen=True)
class CollapseThresholds:
    """Below either value the features are reported as collapsed."""

    feat_std: float = 0.1
    eff_rank: float = 2.0


@dataclass
class Stage1Diagnostics:
    """Diagnostic values, the collapse flag and the reasons for NaN / collapse."""

    values: dict[str, float]
    collapse: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {**self.values, "collapse": self.collapse, "reasons": list(self.reasons)}


def _flat_tokens(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"expected [..., D] features; got {list(x.shape)}")
    return x.detach().reshape(-1, x.shape[-1]).double()


def adjacent_cosine(src: torch.Tensor, dst: torch.Tensor) -> float:
    """Mean cosine similarity of matched ``src``/``dst`` ``[..., D]``."""
    return float(F.cosine_similarity(src.detach().double(), dst.detach().double(), dim=-1).mean())


def adjacent_mse(src: torch.Tensor, dst: torch.Tensor) -> float:
    """Mean squared difference of matched ``src``/``dst`` ``[..., D]``."""
    return float((src.detach().double() - dst.detach().double()).pow(2).mean())


def effective_rank(x: torch.Tensor) -> float:
    """Entropy effective rank of tokens ``x [..., D]`` (0 for an all-zero matrix)."""
    flat = _flat_tokens(x)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()  # singular values of flat
    total = s.sum()
    if float(total) <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def feature_std(x: torch.Tensor) -> float:
    """Collapse detector on tokens ``x [..., D]`` (see ``normalized_feature_std``)."""
    return float(normalized_feature_std(_flat_tokens(x)))


def overlap_retrieval_accuracy(
    features: torch.Tensor, correspondences: Correspondences, grid: tuple[int, int]
) -> float:
    """Fraction of source patches whose most similar token of the partner view is the
    partner's nearest patch. ``features [B,V,P,D]``."""
    feats = F.normalize(features.detach().double(), dim=-1)
    b, v, p, d = feats.shape
    index = match_index(correspondences, grid, v, "nearest", feats.device)
    flat = feats.reshape(b, v * p, d)
    correct, total, start = 0, 0, 0
    for size in index.pair_sizes:  # one matmul per pair (a pair has one partner view)
        if size == 0:
            continue
        src_idx = index.src[start : start + size]
        dst_idx = index.dst[start : start + size, 0]
        view = int(dst_idx[0]) // p
        sims = flat[:, src_idx] @ feats[:, view].transpose(1, 2)  # [B,size,P]
        correct += int((sims.argmax(dim=2) == (dst_idx - view * p)).sum())
        total += b * size
        start += size
    return correct / total


def hungarian_accuracy(src: torch.Tensor, dst: torch.Tensor, sizes: tuple[int, ...]) -> float:
    """Per (panorama, pair) optimal one-to-one matching of sources to partners by cosine;
    fraction matched to their own partner. ``src``/``dst`` ``[B,M,D]``."""
    ga, mask = group_by_pair(F.normalize(src.detach().double(), dim=-1), sizes)
    gb, _ = group_by_pair(F.normalize(dst.detach().double(), dim=-1), sizes)
    sims = (ga @ gb.transpose(1, 2)).cpu().numpy()
    counts = [ga.shape[1]] * ga.shape[0] if mask is None else mask.sum(dim=1).tolist()
    correct = total = 0
    for sim, n in zip(sims, counts):
        if n == 0:
            continue
        rows, cols = linear_sum_assignment(sim[:n, :n], maximize=True)
        correct += int(np.sum(rows == cols))
        total += n
    return correct / total


def stage1_diagnostics(
    head_features: torch.Tensor,
    correspondences: Correspondences,
    grid: tuple[int, int],
    resampler_features: torch.Tensor | None = None,
    sampling: str = "bilinear",
    thresholds: CollapseThresholds | None = None,
) -> Stage1Diagnostics:
    """All Stage-1 diagnostics for one batch; warns (and logs) on collapse.

    ``head_features [B,V,P,D]`` (overlap-head output of the tiles),
    ``resampler_features [B,V,P,D']`` or ``[N,P,D']`` (optional).
    """
    thresholds = thresholds or CollapseThresholds()
    reasons: list[str] = []
    if any(p.src_index.numel() for p in correspondences.pairs):
        src, dst = matched_features(head_features.detach(), correspondences, grid, sampling=sampling)
        sizes = tuple(int(p.src_index.numel()) for p in correspondences.pairs)
        values = {
            "adj_cos": adjacent_cosine(src, dst),
            "adj_mse": adjacent_mse(src, dst),
            "overlap_ret_acc": overlap_retrieval_accuracy(head_features, correspondences, grid),
            "hungarian_acc": hungarian_accuracy(src, dst, sizes),
        }
    else:  # e.g. the erp-global baseline: one view, nothing overlaps
        values = dict.fromkeys(("adj_cos", "adj_mse", "overlap_ret_acc", "hungarian_acc"), math.nan)
        layout = getattr(correspondences, "layout_name", "") or "this layout"
        reasons.append(f"overlap diagnostics: NaN, {layout} has no overlapping views")
    values["feat_std"] = feature_std(head_features)
    values["eff_rank"] = effective_rank(head_features)
    if resampler_features is None:
        values["r_eff_rank"] = math.nan
        reasons.append("r_eff_rank: NaN, no resampler features given")
    else:
        values["r_eff_rank"] = effective_rank(resampler_features)
    collapse_msgs = []
    if values["feat_std"] < thresholds.feat_std:
        collapse_msgs.append(f"feat_std {values['feat_std']:.4g} < {thresholds.feat_std:g}")
    if values["eff_rank"] < thresholds.eff_rank:
        collapse_msgs.append(f"eff_rank {values['eff_rank']:.4g} < {thresholds.eff_rank:g}")
    if collapse_msgs:
        message = "Stage-1 features collapsed: " + "; ".join(collapse_msgs)
        logger.warning(message)
        warnings.warn(message, CollapseWarning, stacklevel=2)
        reasons.append(message)
    return Stage1Diagnostics(values=values, collapse=bool(collapse_msgs), reasons=reasons)


__all__ = [
    "CollapseThresholds",
    "CollapseWarning",
    "Stage1Diagnostics",
    "adjacent_cosine",
    "adjacent_mse",
    "effective_rank",
    "feature_std",
    "hungarian_accuracy",
    "overlap_retrieval_accuracy",
    "stage1_diagnostics",
]
