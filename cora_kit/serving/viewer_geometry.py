"""The tile geometry the serve page draws over the panorama, as JSON (``GET /v1/geometry``).

The same geometry ``cora-kit tile`` draws, from ``cora_kit.geometry``: every tile's outline
on the sphere and, for each tile and its right-hand neighbour, the patches whose centre
rays fall in both (exact correspondences). Angles are degrees, longitude in [-180, 180]
(right is positive), latitude in [-90, 90] (up is positive), the ERP convention of
``cora_kit.geometry``.

    {"layout": "e2p", "grid": [4, 4],
     "views": [{"index", "yaw", "pitch", "fov", "vfov", "is_global", "outline": [[lon, lat], ...]}],
     "matches": [{"src", "dst", "patches": [{"centre": [lon, lat],
                                              "src_cell": [[lon, lat] x4], "dst_cell": [[lon, lat] x4]}]}]}
"""

from __future__ import annotations

from typing import Any

import torch

from cora_kit.geometry import TileLayout, ViewCamera, adjacent_matches, dirs_to_lonlat, grid_to_dirs, view_outline

#: the most patches per side the endpoint accepts (a 64x64 grid is already 4,096 per tile)
MAX_GRID = 64
_CORNERS = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, 0.5], [0.5, -0.5]], dtype=torch.float64)


def _deg(lon: torch.Tensor, lat: torch.Tensor, digits: int = 3) -> list[list[float]]:
    pts = torch.stack([torch.rad2deg(lon), torch.rad2deg(lat)], -1).reshape(-1, 2)
    return [[round(float(a), digits), round(float(b), digits)] for a, b in pts.tolist()]


def _cells(view: ViewCamera, rowcol: torch.Tensor, grid: tuple[int, int], spacing: str) -> list[list[list[float]]]:
    """Corners of the patch cells at integer ``rowcol`` ``[M,2]``: ``M`` lists of 4 (lon, lat)."""
    corners = rowcol.to(torch.float64)[:, None, :] + _CORNERS[None]
    lon, lat = dirs_to_lonlat(grid_to_dirs(view, corners, grid, spacing))
    pts = _deg(lon, lat)
    return [pts[4 * i : 4 * i + 4] for i in range(rowcol.shape[0])]


def layout_geometry(layout: TileLayout, grid: tuple[int, int], outline_points: int = 32) -> dict[str, Any]:
    """The JSON above for ``layout`` with patch grid ``grid`` (rows, cols)."""
    if not (1 <= grid[0] <= MAX_GRID and 1 <= grid[1] <= MAX_GRID):
        raise ValueError(f"grid must be 1..{MAX_GRID} patches per side; got {grid[0]}x{grid[1]}")
    views = []
    for i, v in enumerate(layout.views):
        lon, lat = view_outline(v, outline_points, layout.ray_spacing)
        views.append({
            "index": i, "yaw": v.yaw_deg, "pitch": v.pitch_deg, "fov": v.fov_deg, "vfov": v.vfov,
            "is_global": v.is_global, "projection": v.projection,
            "outline": [] if v.is_global else _deg(lon, lat),
        })
    matches = []
    for src, dst, src_rc, dst_rc in adjacent_matches(layout, grid):
        vs, vd = layout.views[src], layout.views[dst]
        lon, lat = dirs_to_lonlat(grid_to_dirs(vs, src_rc, grid, layout.ray_spacing))
        centres = _deg(lon, lat)
        dst_cells = torch.round(dst_rc).clamp(min=0)
        dst_cells[:, 0].clamp_(max=grid[0] - 1)
        dst_cells[:, 1].clamp_(max=grid[1] - 1)
        src_cells = _cells(vs, src_rc, grid, layout.ray_spacing)
        dcells = _cells(vd, dst_cells, grid, layout.ray_spacing)
        matches.append({
            "src": src, "dst": dst,
            "patches": [{"centre": c, "src_cell": a, "dst_cell": b} for c, a, b in zip(centres, src_cells, dcells, strict=True)],
        })
    return {"layout": layout.name, "grid": list(grid), "views": views, "matches": matches,
            "tiles": len(layout.tile_indices), "fov_note": _fov_note(layout)}


def _fov_note(layout: TileLayout) -> str:
    fovs = sorted({v.fov_deg for v in layout.views if not v.is_global})
    if not fovs:
        return "no tiles"
    return f"{len(layout.tile_indices)} tiles, FOV {', '.join(f'{f:g}' for f in fovs)} deg" + (
        ", + global view" if layout.global_index is not None else "")


__all__ = ["MAX_GRID", "layout_geometry"]
