"""Helpers shared by the built-in stitchers: token positions from the layout geometry."""

from __future__ import annotations

from functools import lru_cache

import torch

from cora_kit.geometry import TileLayout, patch_lonlat
from cora_kit.interfaces import Grid, PluginParams, TokenPositions


class StitcherParams(PluginParams):
    """``include_global``: append the global view's tokens after the tiles (seed order)."""

    include_global: bool = True


@lru_cache(maxsize=32)
def _lonlat(layout: TileLayout, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    # always on the CPU: a model built under `with torch.device("meta")` (model-summary)
    # must not leave meta tensors in this cache for later real models
    with torch.device("cpu"):
        lon, lat = patch_lonlat(layout, grid)
    return lon.to(torch.float32), lat.to(torch.float32)


def positions(layout: TileLayout, grid: Grid, view: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> TokenPositions:
    """``TokenPositions`` for tokens (view, row, col) (LongTensors ``[T]``), lon/lat from the cameras."""
    lon, lat = _lonlat(layout, tuple(grid))
    return TokenPositions(lon=lon[view, row, col], lat=lat[view, row, col], view=view, row=row, col=col)


def whole_views(views: list[int], grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every token of ``views`` (view-major, row-major inside): (view, row, col) ``[len*gh*gw]``."""
    gh, gw = grid
    p = gh * gw
    view = torch.tensor(views, dtype=torch.long).repeat_interleave(p)
    flat = torch.arange(p).repeat(len(views))
    return view, flat // gw, flat % gw


def check_grid(grid: Grid) -> Grid:
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"token grid must be (rows, cols) >= 1; got {grid}")
    return (int(grid[0]), int(grid[1]))


def cat_positions(parts: list[TokenPositions]) -> TokenPositions:
    """Concatenate token positions in order."""
    return TokenPositions(*(torch.cat([getattr(p, f) for p in parts]) for f in ("lon", "lat", "view", "row", "col")))
