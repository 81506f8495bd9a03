"""Q-Former-style resampler (BLIP-2, Li et al. 2023), vision side only.

Learned queries ``[num_queries, hidden]``; each layer (pre-LN): self-attention among
the queries, cross-attention from the queries to the patch tokens (input proj + fixed
2D sincos position), GELU FFN. Final LN, Linear(hidden -> out_dim). BLIP-2 uses 32
queries; the default here is 256 so the 16x16 token grid (and the stitcher) is kept.

``forward(x [N, P, in_dim], grid) -> [N, num_queries, out_dim]``.
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams
from cora_kit_builtins.resamplers.attention import latent_grid, sincos_2d


class QFormerParams(ResamplerParams):
    hidden_dim: int = 1024
    depth: int = 2
    num_heads: int = 8
    num_queries: int = 256
    ff_mult: int = 4


class QFormerLayer(nn.Module):
    """Queries ``[N, Q, D]``: self-attn, cross-attn to tokens ``[N, P, D]``, FFN."""

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"qformer hidden_dim {dim} must be divisible by num_heads {heads}")
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_media = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim)
        )

    def forward(self, media: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        q = self.norm_self(queries)
        queries = queries + self.self_attn(q, q, q, need_weights=False)[0]
        q = self.norm_cross(queries)
        m = self.norm_media(media)
        queries = queries + self.cross_attn(q, m, m, need_weights=False)[0]
        return queries + self.ff(queries)


class QFormerResampler(Resampler):
    """``[N,P,in] -> [N,num_queries,out]`` through learned queries."""

    def __init__(
        self,
        in_dim: int = 1152,
        out_dim: int = 1024,
        hidden_dim: int = 1024,
        depth: int = 2,
        num_heads: int = 8,
        num_queries: int = 256,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"qformer num_queries must be >= 1; got {num_queries}")
        self.in_dim, self.out_dim, self.num_queries = in_dim, out_dim, num_queries
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_dim) * 0.02)
        self.layers = nn.ModuleList(QFormerLayer(hidden_dim, num_heads, ff_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, out_dim)

    def output_grid(self, grid: Grid) -> Grid:
        return latent_grid(self.num_queries, grid)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim or x.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"qformer expects [N,{grid[0] * grid[1]},{self.in_dim}] for grid {tuple(grid)}; got {list(x.shape)}"
            )
        media = self.input_proj(x)
        media = media + sincos_2d(grid, media.shape[-1], media.device).to(media.dtype)
        queries = self.queries.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(media, queries)
        return self.output_proj(self.norm(queries))
