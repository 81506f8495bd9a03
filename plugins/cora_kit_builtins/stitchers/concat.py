"""``concat``: every token of every view (tiles in layout order, then the global view)."""

from __future__ import annotations

from cora_kit.geometry import TileLayout
from cora_kit.interfaces import Grid, Stitcher, TokenPositions
from cora_kit_builtins.stitchers.common import StitcherParams, check_grid, positions, whole_views


class ConcatParams(StitcherParams):
    """Options of ``concat``."""


class ConcatStitcher(Stitcher):
    """All ``V x P`` tokens (seed layout: 9 x 256 = 2,304)."""

    def __init__(self, include_global: bool = True) -> None:
        self.include_global = include_global

    def select(self, layout: TileLayout, grid: Grid) -> TokenPositions:
        grid = check_grid(grid)
        views = list(layout.tile_indices)
        g = layout.global_index
        if self.include_global and g is not None:
            views.append(g)
        return positions(layout, grid, *whole_views(views, grid))
