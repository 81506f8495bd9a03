"""Masked-drop resampler: random token drop at train time only, after an MLP projection.

Projection: Linear(in -> out), GELU, Linear(out -> out), per token. In ``train()`` mode each
sample then drops a random ``P - round(P * (1 - drop_ratio))`` of its tokens: a dropped
token's features are replaced by one learned mask vector (``mask_token`` ``[out]``, as MAE's
[MASK]), so no image information passes through it. The kept positions are in
``self.kept_indices`` ``[N, P_keep]`` (ascending). In ``eval()`` mode every token is kept.

``forward(x [N, P, in_dim], grid) -> [N, P, out_dim]`` in both modes and ``output_grid`` is
the input grid: the seed's masked-drop removed the dropped tokens (a shorter, padded
sequence in training than in evaluation), which cannot feed a stitcher, a panorama PE or
exact overlap correspondences that all address tokens by grid position; masking keeps every
position (and so evaluation sees the grid training saw) while the dropped tokens still carry
no image content.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class MaskedDropParams(ResamplerParams):
    drop_ratio: float = Field(0.25, ge=0.0, lt=1.0)


class MaskedDropResampler(Resampler):
    """Mask tokens at random while training; ``[N,P,in] -> [N,P,out]``."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, drop_ratio: float = 0.25) -> None:
        super().__init__()
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"masked-drop drop_ratio must be in [0, 1); got {drop_ratio}")
        self.in_dim, self.out_dim, self.drop_ratio = in_dim, out_dim, drop_ratio
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.mask_token = nn.Parameter(torch.zeros(out_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.kept_indices: torch.Tensor | None = None

    def num_kept(self, num_tokens: int) -> int:
        return max(1, round(num_tokens * (1.0 - self.drop_ratio)))

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim or x.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"masked-drop expects [N,{grid[0] * grid[1]},{self.in_dim}] for grid {tuple(grid)}; got {list(x.shape)}"
            )
        y = self.proj(x)
        if not (self.training and self.drop_ratio > 0.0):
            self.kept_indices = None
            return y
        n, p, _ = x.shape
        keep = torch.rand(n, p, device=x.device).topk(self.num_kept(p), dim=1).indices.sort(dim=1).values
        self.kept_indices = keep
        kept = torch.zeros(n, p, dtype=torch.bool, device=x.device).scatter_(1, keep, True)
        return torch.where(kept[..., None], y, self.mask_token.to(y.dtype))
