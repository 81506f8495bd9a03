"""Pieces shared by the query-based resamplers (perceiver, qformer).

``LearnedQueryResampler``: input proj + 2D sincos position, learned query tokens updated by
a stack of ``layer(media, queries)`` blocks, final LN + Linear; the subclasses supply the
layer (Flamingo's Perceiver layer, BLIP-2's Q-Former layer).

``sincos_2d(grid, dim)`` -> ``[h*w, dim]`` fixed 2D sine-cosine position embedding
(MAE-style: half the channels encode the row, half the column), so attention-based
resamplers see where each patch is without a parameter tied to one grid size.
"""

from __future__ import annotations

import math

from collections.abc import Callable

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler


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


class LearnedQueryResampler(Resampler):
    """``[N,P,in] -> [N,num_tokens,out]``: learned queries ``[num_tokens, hidden]`` updated
    by ``depth`` layers ``layer(media [N,P,hidden], queries [N,T,hidden])``."""

    label = "query resampler"

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        depth: int,
        num_tokens: int,
        make_layer: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"{self.label}: the number of query tokens must be >= 1; got {num_tokens}")
        self.in_dim, self.out_dim, self.num_tokens = in_dim, out_dim, num_tokens
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.tokens = nn.Parameter(torch.randn(num_tokens, hidden_dim) * 0.02)
        self.layers = nn.ModuleList(make_layer() for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, out_dim)

    def output_grid(self, grid: Grid) -> Grid:
        return latent_grid(self.num_tokens, grid)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim or x.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"{self.label} expects [N,{grid[0] * grid[1]},{self.in_dim}] for grid {tuple(grid)}; got {list(x.shape)}"
            )
        media = self.input_proj(x)
        media = media + sincos_2d(grid, media.shape[-1], media.device).to(media.dtype)
        queries = self.tokens.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(media, queries)
        return self.output_proj(self.norm(queries))
