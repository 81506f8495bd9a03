"""Sphere <-> view geometry: cameras, tile layouts and overlap correspondences.

Conventions (DESIGN.md section 4): longitude (yaw) increases to the right, latitude
(pitch) increases upwards, angles in degrees in the public dataclasses and radians in
tensors. World frame: x right, y up, z forward (lon 0, lat 0 = the ERP centre); a
direction is ``(cos lat sin lon, sin lat, cos lat cos lon)``. ERP pixel ``(x, y)`` (pixel
centres at integers) has ``lon = ((x + 0.5) / W - 0.5) 2pi``, ``lat = (0.5 - (y + 0.5) / H) pi``,
the convention of py360convert and of ``grid_sample(align_corners=False)``.

A view's patch grid is indexed row-major; an integer (row, col) is a patch centre, so
column ``c`` spans ``[c - 0.5, c + 0.5]``. Rays go through true pixel/patch centres
(``ray_spacing="centres"``); ``"py360convert"`` reproduces that library's edge-to-edge
spacing ``linspace(-tan(fov/2), tan(fov/2), size)`` (max ray difference ~2.9e-3 at 256 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

RAY_SPACINGS = ("centres", "py360convert")
PROJECTIONS = ("perspective", "erp", "erp-crop")


@dataclass(frozen=True)
class ViewCamera:
    """One view of a layout.

    ``projection`` is ``"perspective"`` (gnomonic tile), ``"erp"`` (the whole panorama
    resized, the global view) or ``"erp-crop"`` (an unprojected ERP rectangle of
    ``fov_deg`` x ``vfov_deg`` degrees centred on (yaw, pitch)). ``vfov_deg`` None means
    equal to ``fov_deg``.
    """

    yaw_deg: float
    pitch_deg: float
    fov_deg: float
    size: int
    is_global: bool = False
    projection: str = "perspective"
    vfov_deg: float | None = None

    @property
    def vfov(self) -> float:
        """Vertical field of view in degrees."""
        return self.fov_deg if self.vfov_deg is None else self.vfov_deg


@dataclass(frozen=True)
class TileLayout:
    """Ordered views: the global view first (if any), then tiles by pitch ring and yaw."""

    views: tuple[ViewCamera, ...]
    name: str = "e2p"
    ray_spacing: str = "centres"

    def __post_init__(self) -> None:
        if self.ray_spacing not in RAY_SPACINGS:
            raise ValueError(f"ray_spacing must be one of {RAY_SPACINGS}; got {self.ray_spacing!r}")
        for v in self.views:
            if v.projection not in PROJECTIONS:
                raise ValueError(f"view projection must be one of {PROJECTIONS}; got {v.projection!r}")

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def global_index(self) -> int | None:
        """Index of the global view in ``views``, or None."""
        return next((i for i, v in enumerate(self.views) if v.is_global), None)

    @property
    def tile_indices(self) -> list[int]:
        """Indices of the non-global views, in layout order."""
        return [i for i, v in enumerate(self.views) if not v.is_global]


@dataclass
class OverlapPair:
    """Patches of view ``src`` whose centre ray is visible in view ``dst``.

    ``src_index``: LongTensor ``[M]``, flat row-major patch index in ``src``.
    ``dst_rowcol``: FloatTensor ``[M, 2]``, continuous (row, col) in ``dst`` patch units.
    """

    src: int
    dst: int
    src_index: torch.Tensor
    dst_rowcol: torch.Tensor


@dataclass
class Correspondences:
    """Every ordered pair of overlapping views of a layout (see ``overlap_correspondences``).

    ``view_indices``: the layout views taking part, in the order a loss's feature tensor
    ``[B, len(view_indices), P, D]`` holds them. ``pairs[i].src/dst`` index ``layout.views``.
    ``layout_name``: the layout they were built from (named in errors; "" if unknown).
    """

    pairs: list[OverlapPair]
    grid_hw: tuple[int, int]
    mode: str = "geometric"
    view_indices: list[int] = field(default_factory=list)
    layout_name: str = ""


# --- directions -----------------------------------------------------------------


def lonlat_to_dirs(lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """``lon``/``lat`` (radians, any shape S) -> unit directions ``[*S, 3]``."""
    c = torch.cos(lat)
    return torch.stack([c * torch.sin(lon), torch.sin(lat), c * torch.cos(lon)], dim=-1)


def dirs_to_lonlat(dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions ``[*S, 3]`` (any norm) -> (lon in [-pi, pi], lat in [-pi/2, pi/2])."""
    x, y, z = dirs.unbind(-1)
    return torch.atan2(x, z), torch.atan2(y, torch.hypot(x, z))


def camera_basis(view: ViewCamera) -> torch.Tensor:
    """Rows (right, up, forward) of a roll-free camera at (yaw, pitch): ``[3, 3]`` float64."""
    yaw, pitch = math.radians(view.yaw_deg), math.radians(view.pitch_deg)
    sy, cy, sp, cp = math.sin(yaw), math.cos(yaw), math.sin(pitch), math.cos(pitch)
    right = [cy, 0.0, -sy]
    up = [-sp * sy, cp, -sp * cy]
    forward = [cp * sy, sp, cp * cy]
    return torch.tensor([right, up, forward], dtype=torch.float64)


def _norm_coord(c: torch.Tensor, n: int, size: int, spacing: str) -> torch.Tensor:
    """Grid coordinate (cell centres at integers, ``n`` cells over ``size`` pixels) -> [-1, 1]."""
    if spacing == "py360convert" and size > 1:
        pixel = (c + 0.5) * size / n - 0.5
        return 2.0 * pixel / (size - 1) - 1.0
    return (2.0 * c + 1.0) / n - 1.0


def _grid_coord(u: torch.Tensor, n: int, size: int, spacing: str) -> torch.Tensor:
    """Inverse of ``_norm_coord``."""
    if spacing == "py360convert" and size > 1:
        pixel = (u + 1.0) * (size - 1) / 2.0
        return (pixel + 0.5) * n / size - 0.5
    return ((u + 1.0) * n - 1.0) / 2.0


def grid_to_dirs(
    view: ViewCamera, rowcol: torch.Tensor, grid_hw: tuple[int, int], spacing: str = "centres"
) -> torch.Tensor:
    """Continuous (row, col) ``[*S, 2]`` on a ``grid_hw`` grid over ``view`` -> unit dirs ``[*S, 3]``.

    ``spacing`` only affects perspective views (the ERP views are plain resizes/crops).
    """
    rowcol = rowcol.to(torch.float64)
    gh, gw = grid_hw
    sp = spacing if view.projection == "perspective" else "centres"
    u = _norm_coord(rowcol[..., 1], gw, view.size, sp)
    v = _norm_coord(rowcol[..., 0], gh, view.size, sp)
    if view.projection == "perspective":
        x = u * math.tan(math.radians(view.fov_deg) / 2)
        y = -v * math.tan(math.radians(view.vfov) / 2)
        basis = camera_basis(view)
        d = x[..., None] * basis[0] + y[..., None] * basis[1] + basis[2]
        return d / d.norm(dim=-1, keepdim=True)
    if view.projection == "erp":
        return lonlat_to_dirs(u * math.pi, -v * math.pi / 2)
    lon = math.radians(view.yaw_deg) + u * math.radians(view.fov_deg) / 2
    lat = math.radians(view.pitch_deg) - v * math.radians(view.vfov) / 2
    return lonlat_to_dirs(lon, lat)


def dirs_to_grid(
    view: ViewCamera, dirs: torch.Tensor, grid_hw: tuple[int, int], spacing: str = "centres"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions ``[*S, 3]`` -> continuous (row, col) ``[*S, 2]`` in ``view`` and visibility ``[*S]``.

    Visible means in front of the camera and inside the image (``[-0.5, n - 0.5]`` per axis).
    The global ERP view sees everything; its column wraps into ``[-0.5, gw - 0.5)``.
    """
    dirs = dirs.to(torch.float64)
    gh, gw = grid_hw
    sp = spacing if view.projection == "perspective" else "centres"
    if view.projection == "perspective":
        basis = camera_basis(view)
        local = dirs @ basis.T
        z = local[..., 2]
        safe = torch.where(z > 1e-12, z, torch.ones_like(z))
        u = local[..., 0] / safe / math.tan(math.radians(view.fov_deg) / 2)
        v = -local[..., 1] / safe / math.tan(math.radians(view.vfov) / 2)
        front = z > 1e-12
    else:
        lon, lat = dirs_to_lonlat(dirs)
        if view.projection == "erp":
            u, v = lon / math.pi, -lat / (math.pi / 2)
        else:
            dlon = torch.remainder(lon - math.radians(view.yaw_deg) + math.pi, 2 * math.pi) - math.pi
            u = dlon / (math.radians(view.fov_deg) / 2)
            v = -(lat - math.radians(view.pitch_deg)) / (math.radians(view.vfov) / 2)
        front = torch.ones_like(u, dtype=torch.bool)
    col = _grid_coord(u, gw, view.size, sp)
    row = _grid_coord(v, gh, view.size, sp)
    if view.projection == "erp":
        col = torch.remainder(col + 0.5, gw) - 0.5
    eps = 1e-9
    inside = (col >= -0.5 - eps) & (col <= gw - 0.5 + eps) & (row >= -0.5 - eps) & (row <= gh - 0.5 + eps)
    return torch.stack([row, col], dim=-1), front & inside


def _centres(grid_hw: tuple[int, int]) -> torch.Tensor:
    """Integer (row, col) of every cell, row-major: ``[gh*gw, 2]`` float64."""
    rows, cols = torch.meshgrid(
        torch.arange(grid_hw[0], dtype=torch.float64),
        torch.arange(grid_hw[1], dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([rows, cols], dim=-1).reshape(-1, 2)


def patch_dirs(layout: TileLayout, grid_hw: tuple[int, int] = (16, 16)) -> torch.Tensor:
    """Centre ray of every patch of every view: ``[V, gh*gw, 3]`` float64, row-major."""
    centres = _centres(grid_hw)
    return torch.stack([grid_to_dirs(v, centres, grid_hw, layout.ray_spacing) for v in layout.views])


def patch_lonlat(
    layout: TileLayout, grid_hw: tuple[int, int] = (16, 16)
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lon, lat) in radians of every patch centre: two ``[V, gh, gw]`` float64 tensors."""
    lon, lat = dirs_to_lonlat(patch_dirs(layout, grid_hw))
    return lon.reshape(layout.num_views, *grid_hw), lat.reshape(layout.num_views, *grid_hw)


def axis_angle(view: ViewCamera, dirs: torch.Tensor) -> torch.Tensor:
    """Angle (radians) between ``dirs`` ``[*S, 3]`` and the view's optical axis (``[*S]``)."""
    if view.projection == "perspective":
        axis = camera_basis(view)[2]
        cos = (dirs.to(torch.float64) @ axis) / dirs.norm(dim=-1)
        return torch.arccos(cos.clamp(-1.0, 1.0))
    lon, lat = dirs_to_lonlat(dirs.to(torch.float64))
    dlon = torch.remainder(lon - math.radians(view.yaw_deg) + math.pi, 2 * math.pi) - math.pi
    return torch.hypot(dlon, lat - math.radians(view.pitch_deg))


# --- correspondences ------------------------------------------------------------


def overlap_correspondences(
    layout: TileLayout,
    grid_hw: tuple[int, int] = (16, 16),
    mode: str = "geometric",
    *,
    include_global: bool = False,
    k: int = 4,
) -> Correspondences:
    """Patch correspondences between every ordered pair of overlapping views.

    ``geometric``: for each patch centre ray of ``src`` visible in ``dst``, its continuous
    (row, col) in ``dst`` (patch units). ``seed-strip``: the seed's pairing of the right ``k``
    columns of tile i with the left ``k`` columns of tile i+1 (same ring, cyclic), forward
    pairs only, as in the paper. The global view takes part only with ``include_global``.
    """
    gh, gw = grid_hw
    if gh < 1 or gw < 1:
        raise ValueError(f"grid_hw must be positive; got {grid_hw}")
    views = [i for i, v in enumerate(layout.views) if include_global or not v.is_global]
    if mode == "seed-strip":
        return Correspondences(_seed_strip_pairs(layout, grid_hw, k), grid_hw, mode, views, layout.name)
    if mode != "geometric":
        raise ValueError(f"mode must be 'geometric' or 'seed-strip'; got {mode!r}")
    dirs = patch_dirs(layout, grid_hw)
    pairs: list[OverlapPair] = []
    for a in views:
        for b in views:
            if a == b:
                continue
            rowcol, visible = dirs_to_grid(layout.views[b], dirs[a], grid_hw, layout.ray_spacing)
            idx = visible.nonzero().squeeze(1)
            if idx.numel():
                pairs.append(OverlapPair(a, b, idx, rowcol[idx].to(torch.float32)))
    return Correspondences(pairs, grid_hw, mode, views, layout.name)


def rings(layout: TileLayout) -> list[list[int]]:
    """Tiles grouped by pitch (rings in layout order), each ring sorted by yaw."""
    groups: dict[float, list[int]] = {}
    for i in layout.tile_indices:
        groups.setdefault(round(layout.views[i].pitch_deg, 6), []).append(i)
    return [sorted(g, key=lambda i: layout.views[i].yaw_deg % 360.0) for g in groups.values()]


def _seed_strip_pairs(layout: TileLayout, grid_hw: tuple[int, int], k: int) -> list[OverlapPair]:
    gh, gw = grid_hw
    if not 0 < k <= gw:
        raise ValueError(f"seed-strip needs 0 < k <= {gw} columns; got k={k}")
    rows = torch.arange(gh).repeat_interleave(k)
    cols = torch.arange(k).repeat(gh)
    src_index = rows * gw + (gw - k + cols)
    dst_rowcol = torch.stack([rows, cols], dim=1).to(torch.float32)
    pairs = []
    for ring in rings(layout):
        if any(layout.views[i].projection != "perspective" for i in ring):
            raise ValueError(f"seed-strip pairs perspective tiles; layout '{layout.name}' has other views")
        n = len(ring)
        cyclic = n > 2 or (n == 2 and abs(layout.views[ring[1]].yaw_deg - layout.views[ring[0]].yaw_deg) == 180)
        for j in range(n if cyclic else n - 1):
            pairs.append(OverlapPair(ring[j], ring[(j + 1) % n], src_index.clone(), dst_rowcol.clone()))
    return pairs


# --- drawing: view outlines and matching patches (cora-kit tile, the serve page) -----


def view_outline(view: ViewCamera, n: int = 64, spacing: str = "centres") -> tuple[torch.Tensor, torch.Tensor]:
    """Border of ``view`` on the sphere: (lon, lat) in radians, ``[4n]`` each, a closed
    loop through the outer edges of its corner pixels (top, right, bottom, left)."""
    s = view.size
    e = torch.linspace(-0.5, s - 0.5, n, dtype=torch.float64)
    lo, hi = torch.full_like(e, -0.5), torch.full_like(e, s - 0.5)
    border = torch.cat([torch.stack([lo, e], 1), torch.stack([e, hi], 1),
                        torch.stack([hi, e.flip(0)], 1), torch.stack([e.flip(0), lo], 1)])
    return dirs_to_lonlat(grid_to_dirs(view, border, (s, s), spacing))


def adjacent_matches(
    layout: TileLayout, grid_hw: tuple[int, int]
) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Exact correspondences of each tile with its right-hand neighbour in its ring:
    ``(src, dst, src (row, col) [M,2], dst (row, col) [M,2])`` in patch units of ``grid_hw``
    (``dst`` continuous: where the src patch centre's ray lands)."""
    nxt = {r[j]: r[(j + 1) % len(r)] for r in rings(layout) if len(r) > 1 for j in range(len(r))}
    out = []
    for p in overlap_correspondences(layout, grid_hw).pairs:
        if nxt.get(p.src) == p.dst:
            src_rc = torch.stack([p.src_index // grid_hw[1], p.src_index % grid_hw[1]], 1).float()
            out.append((p.src, p.dst, src_rc, p.dst_rowcol))
    return out


# --- ERP images -----------------------------------------------------------------


def erp_pixel_coords(
    view: ViewCamera, erp_hw: tuple[int, int], spacing: str = "centres"
) -> torch.Tensor:
    """ERP pixel coordinates (x, y) sampled by every pixel of ``view``: ``[s, s, 2]`` float64.

    Pixel centres at integers; x wraps into ``[-0.5, W - 0.5)``.
    """
    h, w = erp_hw
    s = view.size
    pix = _centres((s, s))
    dirs = grid_to_dirs(view, pix, (s, s), spacing)
    lon, lat = dirs_to_lonlat(dirs)
    x = (lon / (2 * math.pi) + 0.5) * w - 0.5
    x = torch.remainder(x + 0.5, w) - 0.5
    y = (0.5 - lat / math.pi) * h - 0.5
    return torch.stack([x, y], dim=-1).reshape(s, s, 2)


def load_erp(path: str | Path) -> torch.Tensor:
    """ERP file -> uint8 ``[3, H, W]`` (HWC memory) with ``W == 2 H``:
    ``cora_kit.data.images.read_erp`` (the one ERP reader; its rules and errors), kept here
    for tilers that accept paths."""
    from cora_kit.data.images import read_erp

    return read_erp(path, dtype=torch.uint8)
