"""Matched overlap features: what the losses and the Stage-1 diagnostics share.

A ``Correspondences`` (``cora_kit.geometry``) lists, for every ordered pair of
overlapping views, the flat patch index in the source view and the continuous
(row, col) of the same ray in the destination view. ``matched_features`` turns it into
two aligned tensors ``src [B,M,D]`` / ``dst [B,M,D]`` (``M`` = all matches of all
pairs, pairs concatenated in order): the source patch feature and the destination
feature sampled at the partner's position, bilinearly (border-clamped) or at the
nearest patch. Losses never hard-code strips; the ``seed-strip`` correspondence mode
reproduces the paper's pairing.

View mapping: view ``v`` of ``features`` is layout view ``correspondences.view_indices[v]``
when ``view_indices`` is non-empty (the tiles, global view excluded), else view ``v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cora_kit.geometry import Correspondences

SAMPLING_MODES = ("bilinear", "nearest")


@dataclass(frozen=True)
class MatchIndex:
    """Gather plan for ``M`` matches: flat indices into ``features.reshape(B, V*P, D)``.

    ``src``: ``[M]``; ``dst``: ``[M,K]`` corner indices with ``weight`` ``[M,K]``
    (K=4 bilinear, K=1 nearest); ``pair_sizes``: matches per pair, in pair order.
    """

    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    pair_sizes: tuple[int, ...]


def _feature_view(layout_view: int, view_indices: list[int], num_views: int, what: str) -> int:
    """Index along ``features``' view axis of layout view ``layout_view``."""
    if view_indices:
        if layout_view not in view_indices:
            raise ValueError(
                f"correspondence {what} view {layout_view} is not among the feature views"
                f" {view_indices} (build correspondences with include_global=False for tiles)"
            )
        return view_indices.index(layout_view)
    if not 0 <= layout_view < num_views:
        raise ValueError(
            f"correspondence {what} view {layout_view} is out of range for {num_views} feature views"
        )
    return layout_view


def _check_correspondences(correspondences: Correspondences, grid: tuple[int, int], num_views: int) -> list[int]:
    """ValueErrors for a grid, an empty pair list or view indices that do not fit; the view indices."""
    h, w = int(grid[0]), int(grid[1])
    if tuple(correspondences.grid_hw) != (h, w):
        raise ValueError(
            f"correspondences were built for grid {tuple(correspondences.grid_hw)}; features use {(h, w)}"
        )
    if not correspondences.pairs:
        name = correspondences.layout_name
        raise ValueError(
            (f"tiler layout '{name}' has no overlapping views" if name else "correspondences has no overlapping pairs")
            + "; nothing to align: an overlap loss needs overlapping views (e.g. tiler 'e2p' or 'erp-grid'),"
            " or use loss 'none' with this tiler"
        )
    view_indices = list(correspondences.view_indices)
    if view_indices and len(view_indices) != num_views:
        raise ValueError(
            f"correspondences.view_indices has {len(view_indices)} views; features have {num_views}"
        )
    return view_indices


def _partner_taps(rc: torch.Tensor, grid: tuple[int, int], sampling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Partner positions ``rc`` ``[M,2]`` (row, col) -> flat patch indices ``[M,K]`` and
    weights ``[M,K]``: the nearest patch (K 1) or the 4 bilinear neighbours (K 4)."""
    h, w = grid
    r = rc[:, 0].clamp(0, h - 1)
    c = rc[:, 1].clamp(0, w - 1)
    if sampling == "nearest":
        flat = (torch.floor(r + 0.5).long() * w + torch.floor(c + 0.5).long()).unsqueeze(1)
        return flat, torch.ones_like(r).unsqueeze(1)
    r0 = torch.floor(r).long().clamp(max=max(h - 2, 0))
    c0 = torch.floor(c).long().clamp(max=max(w - 2, 0))
    r1, c1 = (r0 + 1).clamp(max=h - 1), (c0 + 1).clamp(max=w - 1)
    fr, fc = r - r0, c - c0
    flat = torch.stack([r0 * w + c0, r0 * w + c1, r1 * w + c0, r1 * w + c1], dim=1)
    wt = torch.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], dim=1)
    return flat, wt


def match_index(
    correspondences: Correspondences,
    grid: tuple[int, int],
    num_views: int,
    sampling: str = "bilinear",
    device: torch.device | str | None = None,
) -> MatchIndex:
    """Build the gather plan of ``correspondences`` for features with ``num_views`` views."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}; got {sampling!r}")
    h, w = int(grid[0]), int(grid[1])
    view_indices = _check_correspondences(correspondences, (h, w), num_views)
    p = h * w
    srcs, dsts, weights, sizes = [], [], [], []
    for k, pair in enumerate(correspondences.pairs):
        s_view = _feature_view(pair.src, view_indices, num_views, f"pair {k} src")
        d_view = _feature_view(pair.dst, view_indices, num_views, f"pair {k} dst")
        idx = pair.src_index.reshape(-1).long()
        rc = pair.dst_rowcol.float()
        if rc.dim() != 2 or rc.shape[1] != 2 or rc.shape[0] != idx.numel():
            raise ValueError(
                f"pair {k} ({pair.src}->{pair.dst}): dst_rowcol must be [M,2] with M = {idx.numel()};"
                f" got {list(rc.shape)}"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p):
            raise ValueError(f"pair {k} ({pair.src}->{pair.dst}): src_index outside [0, {p})")
        if not torch.isfinite(rc).all():
            raise ValueError(f"pair {k} ({pair.src}->{pair.dst}): dst_rowcol has NaN/Inf")
        flat, wt = _partner_taps(rc, (h, w), sampling)
        srcs.append(s_view * p + idx)
        dsts.append(d_view * p + flat)
        weights.append(wt)
        sizes.append(int(idx.numel()))
    if sum(sizes) == 0:
        raise ValueError("correspondences has no matched patches; nothing to align")
    dst, weight = torch.cat(dsts), torch.cat(weights)
    used = (weight != 0).any(dim=0)  # drop corners no match uses (integer partners: K=1)
    used[0] = True
    return MatchIndex(
        src=torch.cat(srcs).to(device),
        dst=dst[:, used].contiguous().to(device),
        weight=weight[:, used].contiguous().to(device),
        pair_sizes=tuple(sizes),
    )


def _check_features(features: torch.Tensor, grid: tuple[int, int]) -> None:
    if features.dim() != 4:
        raise ValueError(f"overlap features must be [B,V,P,D]; got {list(features.shape)}")
    if features.shape[2] != grid[0] * grid[1]:
        raise ValueError(
            f"overlap features have P={features.shape[2]} tokens per view; grid {tuple(grid)}"
            f" needs {grid[0] * grid[1]}"
        )


def gather_matches(features: torch.Tensor, index: MatchIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """``features [B,V,P,D]`` + plan -> ``(src [B,M,D], dst [B,M,D])``.

    Half/bfloat16 inputs come back as float32 (losses accumulate in float32).
    """
    b, v, p, d = features.shape
    out_dtype = torch.promote_types(features.dtype, torch.float32)
    flat = features.reshape(b, v * p, d)
    src = flat[:, index.src].to(out_dtype)
    weight = index.weight.to(out_dtype)
    dst = flat[:, index.dst[:, 0]].to(out_dtype) * weight[:, 0, None]
    for k in range(1, index.dst.shape[1]):  # at most 4 bilinear corners
        dst = dst + flat[:, index.dst[:, k]].to(out_dtype) * weight[:, k, None]
    return src, dst


def matched_features(
    features: torch.Tensor,
    correspondences: Correspondences,
    grid: tuple[int, int],
    sampling: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source patch features and their partners, for every pair of ``correspondences``.

    Args:
        features: ``[B,V,P,D]`` features of the views named by ``view_indices``.
        correspondences: exact (``geometric``) or ``seed-strip`` correspondences.
        grid: ``(h, w)`` patch grid, ``P = h*w``.
        sampling: ``"bilinear"`` (partner interpolated at its continuous (row, col),
            clamped to the border patch centres) or ``"nearest"`` (nearest patch).

    Returns:
        ``src [B,M,D]``, ``dst [B,M,D]`` with ``M = sum(len(pair.src_index))``, pairs in order.
    """
    _check_features(features, grid)
    index = match_index(correspondences, grid, features.shape[1], sampling, features.device)
    return gather_matches(features, index)


def pair_sizes(correspondences: Correspondences) -> tuple[int, ...]:
    """Number of matches of each pair, in pair order."""
    return tuple(int(p.src_index.numel()) for p in correspondences.pairs)


def pair_ids(correspondences: Correspondences) -> torch.Tensor:
    """``[M]`` LongTensor: the pair number of every match of ``matched_features``."""
    sizes = torch.tensor(pair_sizes(correspondences), dtype=torch.long)
    return torch.repeat_interleave(torch.arange(len(sizes)), sizes)


def group_by_pair(
    x: torch.Tensor, sizes: tuple[int, ...] | list[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x [B,M,D]`` -> ``(groups [B*K, L, D], mask [B*K, L] or None)``.

    One group per (panorama, pair), ``L = max(sizes)``; padded slots are zero and
    ``mask`` is False there (``None`` when all pairs have the same size).
    """
    b, m, d = x.shape
    if sum(sizes) != m:
        raise ValueError(f"pair sizes sum to {sum(sizes)}; x has M={m} matches")
    k, longest = len(sizes), max(sizes)
    if all(s == longest for s in sizes):
        return x.reshape(b * k, longest, d), None
    offsets = torch.tensor([0, *sizes[:-1]], device=x.device).cumsum(0)
    pos = torch.arange(longest, device=x.device)
    valid = pos[None, :] < torch.tensor(sizes, device=x.device)[:, None]  # [K,L]
    idx = torch.where(valid, offsets[:, None] + pos[None, :], torch.zeros_like(pos)[None, :])
    groups = x[:, idx] * valid[None, :, :, None].to(x.dtype)  # [B,K,L,D]
    return groups.reshape(b * k, longest, d), valid.repeat(b, 1)


def normalized_feature_std(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Collapse detector on ``x [N,D]``: per-dim std of the L2-normalised rows, times sqrt(D).

    Isotropic features score ~1, fully collapsed features 0 (independent of D).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"feature std needs [N>=2, D] features; got {list(x.shape)}")
    z = torch.nn.functional.normalize(x.float(), dim=-1, eps=eps)
    return z.std(dim=0, unbiased=True).mean() * (x.shape[1] ** 0.5)


__all__ = [
    "SAMPLING_MODES",
    "MatchIndex",
    "gather_matches",
    "group_by_pair",
    "match_index",
    "matched_features",
    "normalized_feature_std",
    "pair_ids",
    "pair_sizes",
]
