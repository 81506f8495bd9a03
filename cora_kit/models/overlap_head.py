"""The overlap head (seed: ``VICRegProjector``), the Stage-1 self-supervised projector.

``Linear(D_in -> D_hidden) -> LayerNorm -> GELU -> Dropout(p) -> Linear(D_hidden -> D_out)``,
seed 1024 -> 1024 -> 1024 (~2.1M parameters). Dropout 0.0 for VICReg, 0.1 for the
contrastive losses, where two passes with different dropout masks give the InfoNCE
positive pair. The pipeline builds it from config (``p = loss.head_dropout`` by default).
"""

from __future__ import annotations

import torch
from torch import nn


class OverlapHead(nn.Module):
    """``x [..., in_dim]`` -> ``[..., out_dim]``, applied per token."""

    def __init__(
        self, in_dim: int = 1024, hidden_dim: int = 1024, out_dim: int = 1024, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) <= 0:
            raise ValueError(f"overlap head dims must be > 0; got {in_dim}, {hidden_dim}, {out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"overlap head dropout must be in [0, 1); got {dropout}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    @property
    def dropout(self) -> float:
        return float(self.net[3].p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"overlap head expects [..., {self.in_dim}]; got {list(x.shape)}")
        return self.net(x)

    def two_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two passes with independent dropout masks (the InfoNCE positive pair)."""
        return self(x), self(x)
