"""Token-reducing resamplers on the patch grid: ``avgpool``, ``conv``, ``spatial-pool``.

All take ``x [N, h*w, in_dim]`` on grid ``(h, w)`` and return ``[N, h'*w', out_dim]``
on the grid declared by ``output_grid``:

- ``AvgPoolResampler``: AvgPool2d(kernel=stride=pool) then Linear(in -> out);
  grid ``(h // pool, w // pool)``.
- ``ConvResampler``: strided Conv2d(in -> out, kernel=stride=stride), one learned
  filter per output window; grid ``(h // stride, w // stride)``.
- ``SpatialPoolResampler``: AdaptiveAvgPool2d to a fixed ``output_size`` (any input
  grid), then a 2-layer GELU MLP (in -> out -> out); grid ``(output_size, output_size)``.
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


def tokens_to_map(x: torch.Tensor, grid: Grid, in_dim: int, who: str) -> torch.Tensor:
    """``[N, h*w, C]`` -> ``[N, C, h, w]`` with a clear error on a shape mismatch."""
    h, w = grid
    if x.dim() != 3 or x.shape[1] != h * w or x.shape[-1] != in_dim:
        raise ValueError(f"{who} expects [N,{h * w},{in_dim}] for grid {tuple(grid)}; got {list(x.shape)}")
    return x.transpose(1, 2).reshape(x.shape[0], in_dim, h, w)


def map_to_tokens(f: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` -> ``[N, h*w, C]`` (row-major)."""
    return f.flatten(2).transpose(1, 2)


def _check_divides(who: str, grid: Grid, k: int) -> None:
    if grid[0] % k or grid[1] % k:
        raise ValueError(f"{who} with window {k} needs a grid divisible by {k}; got {tuple(grid)}")


class AvgPoolParams(ResamplerParams):
    pool: int = 2


class AvgPoolResampler(Resampler):
    """Average k x k patches, then project; ``[N,h*w,in] -> [N,(h/k)*(w/k),out]``."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, pool: int = 2) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"avgpool pool must be >= 1; got {pool}")
        self.in_dim, self.out_dim, self.pool = in_dim, out_dim, pool
        self.avg = nn.AvgPool2d(pool, pool)
        self.proj = nn.Linear(in_dim, out_dim)

    def output_grid(self, grid: Grid) -> Grid:
        return (grid[0] // self.pool, grid[1] // self.pool)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        _check_divides("avgpool", grid, self.pool)
        return self.proj(map_to_tokens(self.avg(tokens_to_map(x, grid, self.in_dim, "avgpool"))))


class ConvParams(ResamplerParams):
    stride: int = 2


class ConvResampler(Resampler):
    """Strided conv over the grid; ``[N,h*w,in] -> [N,(h/s)*(w/s),out]``."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, stride: int = 2) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"conv stride must be >= 1; got {stride}")
        self.in_dim, self.out_dim, self.stride = in_dim, out_dim, stride
        self.conv = nn.Conv2d(in_dim, out_dim, stride, stride)

    def output_grid(self, grid: Grid) -> Grid:
        return (grid[0] // self.stride, grid[1] // self.stride)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        _check_divides("conv", grid, self.stride)
        return map_to_tokens(self.conv(tokens_to_map(x, grid, self.in_dim, "conv")))


class SpatialPoolParams(ResamplerParams):
    output_size: int = 8


class SpatialPoolResampler(Resampler):
    """Adaptive average pool to a fixed grid, then an MLP; ``[N,h*w,in] -> [N,s*s,out]``."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, output_size: int = 8) -> None:
        super().__init__()
        if output_size < 1:
            raise ValueError(f"spatial-pool output_size must be >= 1; got {output_size}")
        self.in_dim, self.out_dim, self.output_size = in_dim, out_dim, output_size
        self.pool = nn.AdaptiveAvgPool2d(output_size)
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def output_grid(self, grid: Grid) -> Grid:
        return (self.output_size, self.output_size)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self.mlp(map_to_tokens(self.pool(tokens_to_map(x, grid, self.in_dim, "spatial-pool"))))
