"""Perceiver resampler (Flamingo, Alayrac et al. 2022).

Learned latents ``[num_latents, hidden]`` cross-attend to the patch tokens (input proj
+ fixed 2D sincos position); keys/values are the concatenation of tokens and latents,
as in Flamingo. Each layer: latents += attn(LN(latents), LN([tokens; latents])), then
latents += FFN(LN(latents)). Final LN, Linear(hidden -> out_dim).

``forward(x [N, P, in_dim], grid) -> [N, num_latents, out_dim]``; the default 256
latents keep the 16x16 grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cora_kit.interfaces import ResamplerParams
from cora_kit_builtins.resamplers.attention import LearnedQueryResampler


class PerceiverParams(ResamplerParams):
    hidden_dim: int = 1024
    depth: int = 2
    num_heads: int = 8
    num_latents: int = 256
    ff_mult: int = 4


class PerceiverLayer(nn.Module):
    """Latents ``[N, Q, D]`` attend to ``[tokens; latents]``; then a GELU FFN."""

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"perceiver hidden_dim {dim} must be divisible by num_heads {heads}")
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim, bias=False), nn.GELU(),
            nn.Linear(ff_mult * dim, dim, bias=False),
        )

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        n, q_len, d = latents.shape
        lat = self.norm_latents(latents)
        kv_in = torch.cat([self.norm_media(media), lat], dim=1)
        q = self.to_q(lat).view(n, q_len, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(kv_in).view(n, kv_in.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, q_len, d)
        latents = latents + self.to_out(att)
        return latents + self.ff(latents)


class PerceiverResampler(LearnedQueryResampler):
    """``[N,P,in] -> [N,num_latents,out]`` through learned latents."""

    label = "perceiver"

    def __init__(
        self,
        in_dim: int = 1152,
        out_dim: int = 1024,
        hidden_dim: int = 1024,
        depth: int = 2,
        num_heads: int = 8,
        num_latents: int = 256,
        ff_mult: int = 4,
    ) -> None:
        super().__init__(
            in_dim, out_dim, hidden_dim, depth, num_latents, lambda: PerceiverLayer(hidden_dim, num_heads, ff_mult)
        )
        self.num_latents = num_latents
