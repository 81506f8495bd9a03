"""MLP resampler (LLaVA-1.5 / InternVL2 projector; seed "MLP (comparison)").

Linear(in->hidden), LN, GELU, Linear(hidden->hidden), LN, GELU, Linear(hidden->out);
seed dims 1152 -> 1536 -> 1536 -> 1024. Per-token: no interaction between tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class MLPParams(ResamplerParams):
    hidden_dim: int = 1536


class MLPResampler(Resampler):
    """``[N,P,in_dim]`` -> ``[N,P,out_dim]``, same grid."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, hidden_dim: int = 1536) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"mlp expects [N,P,{self.in_dim}]; got {list(x.shape)}")
        return self.net(x)
