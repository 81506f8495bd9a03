"""Pieces shared by the query-based resamplers (perceiver, qformer).

``sincos_2d(grid, dim)`` -> ``[h*w, dim]`` fixed 2D sine-cosine position embedding
(MAE-style: half the channels encode the row, half the column), so attention-based
resamplers see where each patch is without a parameter tied to one grid size.
"""

from __future__ import annotations

import math

import torch

from cora_kit.interfaces import Grid


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``pos [P]`` -> ``[P, dim]`` (dim even): sin then cos of pos * 10000^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"sincos embedding needs an even dim; got {dim}")
    freq = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim // 2))
    ang = pos.float()[:, None] * freq[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def sincos_2d(grid: Grid, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major ``[h*w, dim]`` embedding (dim divisible by 4)."""
    if dim % 4:
        raise ValueError(f"2D sincos embedding needs dim divisible by 4; got {dim}")
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1)


def latent_grid(num_tokens: int, grid: Grid) -> Grid:
    """Grid declared for ``num_tokens`` query outputs: the input grid if sizes match,
    a square if ``num_tokens`` is a perfect square, else ``(1, num_tokens)``."""
    if num_tokens == grid[0] * grid[1]:
        return grid
    s = math.isqrt(num_tokens)
    return (s, s) if s * s == num_tokens else (1, num_tokens)
