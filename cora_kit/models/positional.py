"""Panorama positional encodings for the PanoramaProjector: ``[T]`` token positions -> ``[T, D]``.

``seed-yaw`` (CORA-architecture.md, PanoramaProjector step 1): yaw PE + 2D spatial PE
(additive). A tile's column ``c`` gets the global column ``yaw_view * gw / fov + c``
(mod ``360 * gw / fov``), so tile i's right half and tile i+1's left half get identical
values and tile 7 wraps onto tile 0; yaw = that column times ``fov / gw`` degrees. The
global view's tokens get the same coordinates from their true lon/lat.

``spherical``: sinusoidal features of each token's true ray direction (from lon/lat):
``sin/cos(w_i <d, a_i>)`` for ``D/2`` fixed directions ``a_i`` (a shuffled Fibonacci
sphere) and frequencies ``w_i`` geometric in ``[1, max_freq]``. Tokens that see the same
direction get the same PE in every view; it is continuous across the +-180 deg seam and at
the poles (where lon is undefined), unlike a PE of (lon, lat) taken separately.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cora_kit.geometry import TileLayout, lonlat_to_dirs
from cora_kit.interfaces import Grid, TokenPositions

PE_KINDS = ("seed-yaw", "spherical")


def sincos_1d(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoid of positions ``[T]`` -> ``[T, dim]`` (dim even)."""
    if dim % 2:
        raise ValueError(f"sinusoidal PE needs an even dim; got {dim}")
    freqs = base ** (-torch.arange(dim // 2, dtype=torch.float64) / max(dim // 2, 1))
    angles = pos.to(torch.float64)[:, None] * freqs
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(len(pos), dim)


def periodic_1d(angle: torch.Tensor, dim: int, max_harmonic: int) -> torch.Tensor:
    """Integer harmonics ``k = 1..max_harmonic`` (cycled) of ``angle`` (radians, ``[T]``) -> ``[T, dim]``.

    Exactly 2pi-periodic, so 360 deg wraps onto 0 deg.
    """
    if dim % 2:
        raise ValueError(f"periodic PE needs an even dim; got {dim}")
    k = 1 + torch.arange(dim // 2, dtype=torch.float64) % max(max_harmonic, 1)
    angles = angle.to(torch.float64)[:, None] * k
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(len(angle), dim)


def global_columns(positions: TokenPositions, layout: TileLayout, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Seed global (row, column) of each token and the number of columns around 360 deg."""
    gh, gw = grid
    tiles = [layout.views[i] for i in layout.tile_indices]
    if not tiles:
        raise ValueError(f"seed-yaw PE needs tiles; layout '{layout.name}' has only a global view")
    fov, vfov = tiles[0].fov_deg, tiles[0].vfov
    total = 360.0 * gw / fov
    yaw = torch.tensor([v.yaw_deg for v in layout.views], dtype=torch.float64)
    pitch = torch.tensor([v.pitch_deg for v in layout.views], dtype=torch.float64)
    is_global = torch.tensor([v.is_global for v in layout.views])
    view = positions.view.long()
    col = yaw[view] * gw / fov + positions.col.to(torch.float64)
    row = positions.row.to(torch.float64) - pitch[view] * gh / vfov
    g = is_global[view]
    if g.any():  # the global view: seed coordinates of the token's true direction
        lon_deg = torch.rad2deg(positions.lon.to(torch.float64))
        lat_deg = torch.rad2deg(positions.lat.to(torch.float64))
        col = torch.where(g, (lon_deg + fov / 2) * gw / fov - 0.5, col)
        row = torch.where(g, (vfov / 2 - lat_deg) * gh / vfov - 0.5, row)
    return row, torch.remainder(col, total), total


def seed_yaw_pe(positions: TokenPositions, layout: TileLayout, grid: Grid, dim: int) -> torch.Tensor:
    """Seed PE: periodic yaw PE + 2D spatial sinusoid (row, global column): ``[T, dim]``."""
    if dim % 4:
        raise ValueError(f"seed-yaw PE needs dim divisible by 4; got {dim}")
    row, col, total = global_columns(positions, layout, grid)
    yaw = col * (2 * math.pi / total)
    yaw_pe = periodic_1d(yaw, dim, max_harmonic=int(total // 2))
    spatial = torch.cat([sincos_1d(row, dim // 2), sincos_1d(col, dim // 2)], dim=1)
    return (yaw_pe + spatial).to(torch.float32)


def _fourier_basis(n: int, max_freq: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` unit directions (Fibonacci sphere, golden-ratio shuffled) and frequencies."""
    i = torch.arange(n, dtype=torch.float64)
    z = 1 - 2 * (i + 0.5) / n
    phi = i * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), z, r * torch.sin(phi)], dim=1)
    order = torch.argsort(torch.remainder(i * (math.sqrt(5) - 1) / 2, 1.0))
    freqs = max_freq ** (i / max(n - 1, 1))
    return dirs[order], freqs


def spherical_pe(lon: torch.Tensor, lat: torch.Tensor, dim: int, max_freq: float = 16.0) -> torch.Tensor:
    """Fourier features of the ray direction of (lon, lat) (radians, ``[T]``) -> ``[T, dim]``."""
    if dim % 2:
        raise ValueError(f"spherical PE needs an even dim; got {dim}")
    if max_freq < 1:
        raise ValueError(f"max_freq must be >= 1; got {max_freq}")
    axes, freqs = _fourier_basis(dim // 2, max_freq)
    proj = (lonlat_to_dirs(lon.to(torch.float64), lat.to(torch.float64)) @ axes.T) * freqs
    return torch.stack([proj.sin(), proj.cos()], dim=-1).reshape(len(lon), dim).to(torch.float32)


def panorama_pe(
    kind: str, positions: TokenPositions, layout: TileLayout, grid: Grid, dim: int, *, max_freq: float = 16.0
) -> torch.Tensor:
    """PE ``[T, dim]`` float32 of stitched tokens (``kind`` in ``PE_KINDS``)."""
    if kind == "seed-yaw":
        return seed_yaw_pe(positions, layout, grid, dim)
    if kind == "spherical":
        return spherical_pe(positions.lon, positions.lat, dim, max_freq)
    raise ValueError(f"unknown panorama PE '{kind}'; choose one of {', '.join(PE_KINDS)}")


class PanoramaPE(nn.Module):
    """Additive panorama PE with a per-(layout, grid, T) cache: ``forward(x [B,T,D], positions)``."""

    def __init__(self, kind: str, dim: int, max_freq: float = 16.0, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)
        if kind not in PE_KINDS:
            raise ValueError(f"unknown panorama PE '{kind}'; choose one of {', '.join(PE_KINDS)}")
        self.kind, self.dim, self.max_freq = kind, dim, max_freq
        self._cache: dict[tuple, torch.Tensor] = {}

    def encoding(self, positions: TokenPositions, layout: TileLayout, grid: Grid) -> torch.Tensor:
        key = (layout, tuple(grid), tuple(positions.view.tolist()), tuple(positions.row.tolist()), tuple(positions.col.tolist()))
        if key not in self._cache:
            self._cache[key] = panorama_pe(self.kind, positions, layout, grid, self.dim, max_freq=self.max_freq)
        return self._cache[key]

    def forward(self, x: torch.Tensor, positions: TokenPositions, layout: TileLayout, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != len(positions) or x.shape[2] != self.dim:
            raise ValueError(f"PanoramaPE expects [B,{len(positions)},{self.dim}]; got {list(x.shape)}")
        return x + self.scale * self.encoding(positions, layout, grid).to(device=x.device, dtype=x.dtype)
