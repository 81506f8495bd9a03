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

from cora_kit.interfaces import ResamplerParams
from cora_kit_builtins.resamplers.attention import LearnedQueryResampler


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


class QFormerResampler(LearnedQueryResampler):
    """``[N,P,in] -> [N,num_queries,out]`` through learned queries."""

    label = "qformer"

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
        super().__init__(
            in_dim, out_dim, hidden_dim, depth, num_queries, lambda: QFormerLayer(hidden_dim, num_heads, ff_mult)
        )
        self.num_queries = num_queries
