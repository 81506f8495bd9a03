"""InfoNCE overlap loss with the seed's within-tile term (CORA "contrastive" loss).

Symmetric NT-Xent (SimCLR, Chen et al., 2020) inside groups. For unit vectors
``a_i``, ``b_i`` of one group of ``n`` positives, the anchor ``a_i`` scores::

    l(a_i) = -log( exp(a_i.b_i / t) / (sum_j exp(a_i.b_j / t) + sum_{j != i} exp(a_i.a_j / t)) )

and symmetrically ``l(b_i)``; the group loss is the mean over all ``2n`` anchors
(lightly's ``NTXentLoss`` on that group). Padded slots are neither anchors nor
negatives; the total is the mean over all anchors of all groups.

- overlap term: ``a`` = source patch, ``b`` = its partner sampled in the other view;
  negatives = the other positions of the same (panorama, pair) overlap
  (``negatives="pair"``) or every matched position of the batch (``"batch"``).
- within-tile term (seed): ``a``, ``b`` = the same token under two dropout masks of
  the overlap head (``second_view``), negatives = the other tokens of the tile.

``loss = overlap(t_overlap) + tile_weight * tile(t_tile)``; seed: t 0.07 / 0.2,
tile_weight 0.1, head dropout 0.1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from cora_kit.geometry import Correspondences
from cora_kit.interfaces import Grid, OverlapLoss, PluginParams
from cora_kit.overlap import group_by_pair, matched_features, normalized_feature_std, pair_sizes


class InfoNCEParams(PluginParams):
    temperature: float = 0.07
    tile_temperature: float = 0.2
    tile_weight: float = 0.1
    negatives: Literal["pair", "batch"] = "pair"
    sampling: Literal["bilinear", "nearest"] = "bilinear"
    collapse_std: float = 0.1


def grouped_ntxent(
    a: torch.Tensor, b: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric NT-Xent per group: ``a, b [G,L,D]``, ``mask [G,L]`` -> (loss, top-1 acc).

    Computed in float32 (or wider); finite for zero or constant inputs.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ntxent expects two [G,L,D] tensors; got {list(a.shape)} and {list(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    dtype = torch.promote_types(a.dtype, torch.float32)
    a = F.normalize(a.to(dtype), dim=-1)
    b = F.normalize(b.to(dtype), dim=-1)
    g, n, _ = a.shape
    both = torch.cat([a, b], dim=1)  # [G,2n,D]
    logits = both @ both.transpose(1, 2) / temperature  # [G,2n,2n]
    blocked = torch.eye(2 * n, dtype=torch.bool, device=a.device).expand(g, -1, -1)
    if mask is not None:
        valid = torch.cat([mask, mask], dim=1)  # [G,2n]
        blocked = blocked | ~valid[:, None, :]
    # a large finite negative (not -inf): an all-padded row stays finite in backward
    logits = logits.masked_fill(blocked, -0.25 * torch.finfo(dtype).max)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    pos = logits.gather(2, target.expand(g, -1).unsqueeze(-1)).squeeze(-1)  # [G,2n]
    per_anchor = torch.logsumexp(logits, dim=2) - pos
    correct = (logits.argmax(dim=2) == target).to(dtype)
    if mask is None:
        return per_anchor.mean(), correct.mean()
    valid = torch.cat([mask, mask], dim=1)
    count = valid.sum().clamp(min=1)
    return per_anchor[valid].sum() / count, correct[valid].sum() / count


def overlap_groups(
    src: torch.Tensor, dst: torch.Tensor, sizes: tuple[int, ...], negatives: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Matched ``[B,M,D]`` -> groups ``[G,L,D]`` (+ mask) by (panorama, pair) or one batch group."""
    if negatives == "batch":
        d = src.shape[-1]
        return src.reshape(1, -1, d), dst.reshape(1, -1, d), None
    ga, mask = group_by_pair(src, sizes)
    gb, _ = group_by_pair(dst, sizes)
    return ga, gb, mask


class InfoNCELoss(OverlapLoss):
    """Overlap InfoNCE + within-tile InfoNCE (see module docstring).

    ``forward(features, correspondences, grid, second_view=None)``: ``second_view``
    ``[B,V,P,D]`` is a second pass of the overlap head (another dropout mask); it is
    required when ``tile_weight > 0`` and then gives the partners' side of the overlap term.
    """

    head_dropout = 0.1
    #: the pipeline passes a second head pass as ``second_view``
    two_views = True

    def __init__(
        self,
        temperature: float = 0.07,
        tile_temperature: float = 0.2,
        tile_weight: float = 0.1,
        negatives: str = "pair",
        sampling: str = "bilinear",
        collapse_std: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0 or tile_temperature <= 0:
            raise ValueError(f"temperatures must be > 0; got {temperature}, {tile_temperature}")
        if tile_weight < 0:
            raise ValueError(f"tile_weight must be >= 0; got {tile_weight}")
        if negatives not in ("pair", "batch"):
            raise ValueError(f"negatives must be 'pair' or 'batch'; got {negatives!r}")
        self.temperature, self.tile_temperature = temperature, tile_temperature
        self.tile_weight, self.negatives = tile_weight, negatives
        self.sampling, self.collapse_std = sampling, collapse_std

    def forward(
        self,
        features: torch.Tensor,
        correspondences: Correspondences,
        grid: Grid,
        second_view: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if second_view is not None and second_view.shape != features.shape:
            raise ValueError(
                f"second_view must match features {list(features.shape)}; got {list(second_view.shape)}"
            )
        if self.tile_weight > 0 and second_view is None:
            raise ValueError(
                "infonce's within-tile term needs a second overlap-head pass (another dropout"
                " mask): call loss(z1, correspondences, grid, second_view=z2), or set tile_weight=0"
            )
        partner = features if second_view is None else second_view
        src, _ = matched_features(features, correspondences, grid, sampling=self.sampling)
        _, dst = matched_features(partner, correspondences, grid, sampling=self.sampling)
        ga, gb, mask = overlap_groups(src, dst, pair_sizes(correspondences), self.negatives)
        overlap, acc = grouped_ntxent(ga, gb, self.temperature, mask)
        loss = overlap
        logs = {"overlap": float(overlap.detach()), "overlap_acc": float(acc)}
        if self.tile_weight > 0:
            assert second_view is not None
            b, v, p, d = features.shape
            tile, tile_acc = grouped_ntxent(
                features.reshape(b * v, p, d), second_view.reshape(b * v, p, d), self.tile_temperature
            )
            loss = overlap + self.tile_weight * tile
            logs.update(tile=float(tile.detach()), tile_acc=float(tile_acc))
        std = float(normalized_feature_std(src.reshape(-1, src.shape[-1]).detach()))
        logs.update(feat_std=std, collapse=float(std < self.collapse_std))
        return loss, logs
