"""Inputs the checks feed plugins: the seed's tile layout and hand-made correspondences.

Also useful in plugin authors' own tests: ``world_features`` cut from one random feature
panorama agree exactly on every pair of ``strip_correspondences``.
"""

from __future__ import annotations

import torch

from cora_kit.geometry import Correspondences, OverlapPair, TileLayout, ViewCamera
from cora_kit.interfaces import Grid


def tile_layout(num_tiles: int = 8, with_global: bool = True, size: int = 256, fov: float = 90.0) -> TileLayout:
    """The seed's e2p layout: optional global view, then ``num_tiles`` pitch-0 tiles 45 deg apart."""
    views = [ViewCamera(0.0, 0.0, 360.0, size, is_global=True, projection="erp")] if with_global else []
    views += [ViewCamera(45.0 * i, 0.0, fov, size) for i in range(num_tiles)]
    return TileLayout(tuple(views), name="e2p")


def strip_correspondences(num_views: int, grid: Grid, shift: int) -> Correspondences:
    """Hand-made correspondences of a strip of views: column ``c >= shift`` of view ``v``
    sees what column ``c - shift`` of view ``v+1`` sees (and back), at integer positions."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pairs: list[OverlapPair] = []
    for v in range(num_views - 1):
        for src, dst, sel, off in ((v, v + 1, cols >= shift, -shift), (v + 1, v, cols < w - shift, shift)):
            idx = (rows * w + cols)[sel]
            rowcol = torch.stack([rows[sel], cols[sel] + off], dim=-1).float()
            pairs.append(OverlapPair(src, dst, idx, rowcol))
    return Correspondences(pairs, grid, mode="seed-strip", view_indices=list(range(num_views)))


def world_features(batch: int, num_views: int, grid: Grid, dim: int, shift: int, seed: int = 0) -> torch.Tensor:
    """``[B,V,P,D]`` cut from one random feature panorama: identical on every correspondence
    of ``strip_correspondences(num_views, grid, shift)``."""
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    world = torch.randn(batch, h, shift * (num_views - 1) + w, dim, generator=gen)
    views = [world[:, :, v * shift : v * shift + w] for v in range(num_views)]
    return torch.stack(views, dim=1).reshape(batch, num_views, h * w, dim)


__all__ = ["strip_correspondences", "tile_layout", "world_features"]
