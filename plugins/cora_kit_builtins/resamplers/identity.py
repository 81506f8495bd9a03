"""Identity resampler: keeps tokens as they are (``in_dim`` must equal ``out_dim``)."""

from __future__ import annotations

import torch

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class IdentityParams(ResamplerParams):
    """``in_dim`` and ``out_dim`` default to 1152 here: identity cannot change the width."""

    in_dim: int = 1152
    out_dim: int = 1152


class IdentityResampler(Resampler):
    """``[N,P,D]`` -> ``[N,P,D]`` unchanged; no parameters."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1152) -> None:
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(
                f"identity resampler cannot map {in_dim} -> {out_dim}; use equal dims or 'linear'/'mlp'"
            )
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"identity expects [N,P,{self.in_dim}]; got {list(x.shape)}")
        return x
