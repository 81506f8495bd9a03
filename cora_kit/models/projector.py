"""PanoramaProjector (seed component 4, Stages 2 and 3): PE + Linear + stitching.

Seed order: panorama PE added to the latent tokens, ``Linear(D_latent -> D_lm)``, then
the stitcher drops overlapping columns. PE and Linear act per token, so selecting the
tokens first gives the same result for less work; that is what ``forward`` does::

    latent [B,V,P,D_latent] --stitcher--> [B,T,D_latent] --+PE[T,D_latent]--> Linear --> [B,T,D_lm]

Paper: 8 tiles + global of 16x16 tokens, ``stride-views`` -> T = 1,408; Linear 1024 -> 1024
(1.05M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.geometry import TileLayout
from cora_kit.interfaces import Grid, StitchedTokens, Stitcher, TokenPositions
from cora_kit.models.positional import PanoramaPE


class PanoramaProjector(nn.Module):
    """``forward(latent [B,V,P,D_latent]) -> StitchedTokens([B,T,D_lm], positions)``."""

    def __init__(
        self,
        latent_dim: int,
        lm_dim: int,
        stitcher: Stitcher,
        layout: TileLayout,
        grid: Grid,
        pe: str = "seed-yaw",
        pe_scale: float = 1.0,
        out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.stitcher, self.layout, self.grid = stitcher, layout, (int(grid[0]), int(grid[1]))
        self.positions: TokenPositions = stitcher.select(layout, self.grid)
        self.pe_kind = pe
        self.pe = None if pe == "none" else PanoramaPE(pe, latent_dim, scale=pe_scale)
        self.linear = nn.Linear(latent_dim, lm_dim)
        self.out_scale = float(out_scale)
        self.latent_dim, self.lm_dim = latent_dim, lm_dim

    @property
    def num_tokens(self) -> int:
        """T, the number of stitched vision tokens per panorama."""
        return len(self.positions)

    def forward(self, latent: torch.Tensor) -> StitchedTokens:
        if latent.dim() != 4 or latent.shape[-1] != self.latent_dim:
            raise ValueError(
                f"PanoramaProjector expects latent [B,{self.layout.num_views},"
                f"{self.grid[0] * self.grid[1]},{self.latent_dim}]; got {list(latent.shape)}"
            )
        stitched = self.stitcher(latent, self.layout, self.grid)
        x = stitched.tokens
        if self.pe is not None:
            x = self.pe(x, stitched.positions, self.layout, self.grid)
        tokens = self.linear(x)
        if self.out_scale != 1.0:
            tokens = tokens * self.out_scale
        return StitchedTokens(tokens=tokens, positions=stitched.positions)
