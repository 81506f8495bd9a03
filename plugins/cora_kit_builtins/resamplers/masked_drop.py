"""Masked-drop resampler: random token drop at train time only, then an MLP projection.

In ``train()`` mode each sample keeps a random ``round(P * (1 - drop_ratio))`` of its
tokens (in their original order; indices in ``self.kept_indices`` ``[N, P_keep]``);
in ``eval()`` mode every token is kept. Projection: Linear(in -> out), GELU,
Linear(out -> out), per token.

``forward(x [N, P, in_dim], grid) -> [N, P_keep, out_dim]`` (train) or ``[N, P, out_dim]``
(eval). ``output_grid`` is the input grid in eval and ``(1, P_keep)`` in training, since
the kept tokens no longer form a grid.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class MaskedDropParams(ResamplerParams):
    drop_ratio: float = Field(0.25, ge=0.0, lt=1.0)


class MaskedDropResampler(Resampler):
    """Drop tokens at random while training; ``[N,P,in] -> [N,P_keep,out]``."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, drop_ratio: float = 0.25) -> None:
        super().__init__()
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"masked-drop drop_ratio must be in [0, 1); got {drop_ratio}")
        self.in_dim, self.out_dim, self.drop_ratio = in_dim, out_dim, drop_ratio
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.kept_indices: torch.Tensor | None = None

    def num_kept(self, num_tokens: int) -> int:
        return max(1, round(num_tokens * (1.0 - self.drop_ratio)))

    def output_grid(self, grid: Grid) -> Grid:
        if not self.training or self.drop_ratio == 0.0:
            return grid
        return (1, self.num_kept(grid[0] * grid[1]))

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim or x.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"masked-drop expects [N,{grid[0] * grid[1]},{self.in_dim}] for grid {tuple(grid)}; got {list(x.shape)}"
            )
        if self.training and self.drop_ratio > 0.0:
            n, p, _ = x.shape
            scores = torch.rand(n, p, device=x.device)
            keep = scores.topk(self.num_kept(p), dim=1).indices.sort(dim=1).values
            self.kept_indices = keep
            x = x.gather(1, keep[:, :, None].expand(-1, -1, x.shape[-1]))
        else:
            self.kept_indices = None
        return self.proj(x)
