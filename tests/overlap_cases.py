"""Hand-built correspondences for loss/diagnostic tests (independent of the geometry code)."""

from __future__ import annotations

import torch

from cora_kit.geometry import Correspondences, OverlapPair


def seed_strip(num_tiles: int = 8, grid: tuple[int, int] = (16, 16), k: int = 4, offset: int = 1) -> Correspondences:
    """Seed pairing: tile i's right k columns <-> tile i+1's left k columns (cyclic).

    Layout views are ``offset .. offset+num_tiles-1`` (view 0 = global, excluded).
    """
    h, w = grid
    rows = torch.arange(h).repeat_interleave(k)
    cols = torch.arange(k).repeat(h)
    pairs = [
        OverlapPair(
            src=offset + i,
            dst=offset + (i + 1) % num_tiles,
            src_index=rows * w + (w - k + cols),
            dst_rowcol=torch.stack([rows, cols], dim=1).float(),
        )
        for i in range(num_tiles)
    ]
    return Correspondences(pairs, grid, "seed-strip", list(range(offset, offset + num_tiles)))


def identical_overlaps(features: torch.Tensor, corr: Correspondences) -> torch.Tensor:
    """Copy every source patch onto its (integer) partner position, in pair order.

    Returns ``features`` ``[B,V,P,D]`` whose overlaps are identical; only exact for
    correspondences whose partner positions are integers and chains that do not conflict
    (seed-strip with k <= w/2).
    """
    out = features.clone()
    h, w = corr.grid_hw
    for pair in corr.pairs:
        s = corr.view_indices.index(pair.src)
        d = corr.view_indices.index(pair.dst)
        dst_flat = (pair.dst_rowcol[:, 0].round() * w + pair.dst_rowcol[:, 1].round()).long()
        out[:, d, dst_flat] = out[:, s, pair.src_index]
    return out
