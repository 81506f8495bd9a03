"""``stride-views`` (seed): drop each tile's overlap strip, concatenate, append the global view.

Seed (CORA-architecture.md, PanoramaProjector step 3): 8 tiles of 16x16 tokens, overlap 8
columns: tile 0 keeps columns 0..15, tiles 1..7 keep columns 8..15 -> a 16 x 72 token
panorama (1,152 tokens, row-major) + the global view's 256 tokens = 1,408.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cora_kit.geometry import TileLayout, rings
from cora_kit.interfaces import Grid, Stitcher, TokenPositions
from cora_kit_builtins.stitchers.common import StitcherParams, cat_positions, check_grid, positions, whole_views


class StrideViewsParams(StitcherParams):
    """``keep_cols``: columns kept per tile after the first; None = ``cols * stride / fov``."""

    keep_cols: int | None = Field(None, ge=1)


class StrideViewsStitcher(Stitcher):
    """One ring of perspective (or ERP-crop) tiles -> ``[gh, gw + (n-1) keep]`` token panorama (+ global)."""

    def __init__(self, include_global: bool = True, keep_cols: int | None = None) -> None:
        self.include_global = include_global
        self.keep_cols = keep_cols

    def _keep(self, layout: TileLayout, ring: list[int], gw: int) -> int:
        if self.keep_cols is not None:
            keep = self.keep_cols
        else:
            v0, v1 = layout.views[ring[0]], layout.views[ring[1 % len(ring)]]
            stride = (v1.yaw_deg - v0.yaw_deg) % 360.0 or 360.0
            exact = gw * stride / v0.fov_deg
            keep = round(exact)
            if abs(exact - keep) > 1e-6:
                raise ValueError(
                    f"stride-views: a {gw}-column token grid over FOV {v0.fov_deg} with stride "
                    f"{stride} deg keeps {exact:.3f} columns per tile, not an integer; this resampler's "
                    "grid is not supported here, use 'nearest-view' or 'concat' or set keep_cols"
                )
        if not 1 <= keep <= gw:
            raise ValueError(f"stride-views: keep_cols must be in [1, {gw}]; got {keep}")
        return keep

    def select(self, layout: TileLayout, grid: Grid) -> TokenPositions:
        gh, gw = check_grid(grid)
        kinds = sorted({v.projection for v in layout.views if not v.is_global})
        ring_list = rings(layout)
        # ERP-crop tiles (erp-grid) overlap exactly by column, so the strip drop is exact there
        if kinds not in (["perspective"], ["erp-crop"]) or len(ring_list) != 1:
            raise ValueError(
                f"stride-views expects one ring of perspective tiles (or of erp-crop tiles); layout "
                f"'{layout.name}' has {len(ring_list)} rings of {'/'.join(kinds) or 'no'} views"
                + "; use 'nearest-view' or 'concat'"
            )
        ring = ring_list[0]
        keep = self._keep(layout, ring, gw)
        # per panorama column: (tile, column in tile); row-major over the [gh, W] panorama
        tile_of = [ring[0]] * gw + [t for t in ring[1:] for _ in range(keep)]
        col_of = list(range(gw)) + [c for _ in ring[1:] for c in range(gw - keep, gw)]
        width = len(col_of)
        view = torch.tensor(tile_of, dtype=torch.long).repeat(gh)
        col = torch.tensor(col_of, dtype=torch.long).repeat(gh)
        row = torch.arange(gh).repeat_interleave(width)
        parts = [positions(layout, (gh, gw), view, row, col)]
        g = layout.global_index
        if self.include_global and g is not None:
            parts.append(positions(layout, (gh, gw), *whole_views([g], (gh, gw))))
        return cat_positions(parts)
