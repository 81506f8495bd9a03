"""A single linear layer resampler: ``[N,P,in_dim]`` -> ``[N,P,out_dim]``."""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class LinearParams(ResamplerParams):
    bias: bool = True


class LinearResampler(Resampler):
    """One ``nn.Linear`` per token; keeps the grid."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, bias: bool = True) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"linear expects [N,P,{self.in_dim}]; got {list(x.shape)}")
        return self.proj(x)
