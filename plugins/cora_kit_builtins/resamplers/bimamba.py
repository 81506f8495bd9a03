"""BiMamba resampler (the seed's default; CORA "Resampler" section).

Input proj Linear(in_dim -> hidden); ``num_layers`` BiMamba blocks, each
``LN(x + (fwd(x) + flip(bwd(flip(x)))) / 2)`` with two Mamba SSMs; final LayerNorm;
output proj Linear(hidden -> out_dim). Seed: 1152 -> 1024, 4 layers, d_state 64,
d_conv 4, expand 2. Tokens are scanned in ``scan_order`` over the ``(h, w)`` grid
(row-major, column-major or snake) and put back in row-major order at the end.

``forward(x [N, P, in_dim], grid) -> [N, P, out_dim]``, same grid. ``backend`` is the
scan backend that ran (``"torch scan"`` or ``"mamba-ssm CUDA"``); never another model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams
from cora_kit_builtins.resamplers.mamba_block import BackendName, MambaBlock

ScanOrder = Literal["row-major", "column-major", "snake"]


class BiMambaParams(ResamplerParams):
    hidden_dim: int = 1024
    num_layers: int = 4
    d_state: int = 64
    d_conv: int = 4
    expand: float = 2.0
    scan_order: ScanOrder = "row-major"
    backend: BackendName = "auto"
    chunk: int = 8


def scan_permutation(grid: Grid, order: ScanOrder) -> torch.Tensor:
    """Row-major token indices ``[h*w]`` listed in scan order."""
    h, w = grid
    idx = torch.arange(h * w).reshape(h, w)
    if order == "row-major":
        return idx.flatten()
    if order == "column-major":
        return idx.T.flatten()
    if order == "snake":
        idx[1::2] = idx[1::2].flip(1)
        return idx.flatten()
    raise ValueError(f"scan_order must be row-major, column-major or snake; got {order!r}")


class BiMambaBlock(nn.Module):
    """``[b, L, d]`` -> ``[b, L, d]``: forward and reversed Mamba, averaged, residual, LN."""

    def __init__(self, dim: int, **mamba_kw: object) -> None:
        super().__init__()
        self.forward_ssm = MambaBlock(dim, **mamba_kw)  # type: ignore[arg-type]
        self.backward_ssm = MambaBlock(dim, **mamba_kw)  # type: ignore[arg-type]
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fwd = self.forward_ssm(x)
        bwd = self.backward_ssm(x.flip(1)).flip(1)
        return self.norm(x + 0.5 * (fwd + bwd))


class BiMambaResampler(Resampler):
    """Bidirectional Mamba over each view's patch tokens; ``[N,P,in] -> [N,P,out]``."""

    def __init__(
        self,
        in_dim: int = 1152,
        out_dim: int = 1024,
        hidden_dim: int = 1024,
        num_layers: int = 4,
        d_state: int = 64,
        d_conv: int = 4,
        expand: float = 2.0,
        scan_order: ScanOrder = "row-major",
        backend: BackendName = "auto",
        chunk: int = 8,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"bimamba num_layers must be >= 1; got {num_layers}")
        scan_permutation((1, 1), scan_order)  # validates the name
        self.in_dim, self.out_dim, self.scan_order = in_dim, out_dim, scan_order
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            BiMambaBlock(
                hidden_dim, d_state=d_state, d_conv=d_conv, expand=expand,
                backend=backend, chunk=chunk,
            )
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, out_dim)

    @property
    def backend(self) -> str:  # type: ignore[override]
        """Backend of the scans (what ran last, or what ``auto`` would pick)."""
        return self.blocks[0].forward_ssm.backend

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"bimamba expects [N,P,{self.in_dim}]; got {list(x.shape)}")
        if x.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"bimamba got P={x.shape[1]} tokens for grid {tuple(grid)}")
        perm = scan_permutation(grid, self.scan_order).to(x.device)
        h = self.input_proj(x)
        if self.scan_order != "row-major":
            h = h[:, perm]
        for block in self.blocks:
            h = block(h)
        h = self.output_proj(self.final_norm(h))
        if self.scan_order != "row-major":
            h = h[:, torch.argsort(perm)]
        return h
