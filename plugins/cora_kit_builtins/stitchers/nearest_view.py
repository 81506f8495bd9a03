"""``nearest-view`` (exact): each token kept only by the tile whose optical axis is closest
to its ray, so each direction of the sphere is represented once (global view appended)."""

from __future__ import annotations

import torch

from cora_kit.geometry import TileLayout, axis_angle, dirs_to_grid, patch_dirs
from cora_kit.interfaces import Grid, Stitcher, TokenPositions
from cora_kit_builtins.stitchers.common import StitcherParams, cat_positions, check_grid, positions, whole_views


class NearestViewParams(StitcherParams):
    """Options of ``nearest-view``."""


def nearest_view_mask(layout: TileLayout, grid: Grid) -> torch.Tensor:
    """``[V, gh*gw]`` bool: the tile patches kept (the global view's row is all False).

    A patch is kept when no other tile that sees its centre ray has a smaller ray-to-axis
    angle (ties within 1e-9 rad go to the lower view index).
    """
    dirs = patch_dirs(layout, grid)
    tiles = layout.tile_indices
    angles = torch.full((layout.num_views, layout.num_views, dirs.shape[1]), float("inf"), dtype=torch.float64)
    for a in tiles:
        for b in tiles:
            visible = dirs_to_grid(layout.views[b], dirs[a], grid, layout.ray_spacing)[1] if a != b else None
            ang = axis_angle(layout.views[b], dirs[a])
            angles[a, b] = ang if visible is None else torch.where(visible, ang, torch.inf)
    keep = torch.zeros(layout.num_views, dirs.shape[1], dtype=torch.bool)
    for a in tiles:
        own = angles[a, a]
        beaten = torch.zeros_like(own, dtype=torch.bool)
        for b in tiles:
            if b != a:
                beaten |= (angles[a, b] < own - 1e-9) | ((angles[a, b] - own).abs() <= 1e-9) & (b < a)
        keep[a] = ~beaten
    return keep


class NearestViewStitcher(Stitcher):
    """Tiles' tokens, each direction once (view-major, row-major), then the global view."""

    def __init__(self, include_global: bool = True) -> None:
        self.include_global = include_global

    def select(self, layout: TileLayout, grid: Grid) -> TokenPositions:
        gh, gw = check_grid(grid)
        keep = nearest_view_mask(layout, (gh, gw))
        view, flat = keep.nonzero(as_tuple=True)
        parts = [positions(layout, (gh, gw), view, flat // gw, flat % gw)]
        g = layout.global_index
        if self.include_global and g is not None:
            parts.append(positions(layout, (gh, gw), *whole_views([g], (gh, gw))))
        return cat_positions(parts)
