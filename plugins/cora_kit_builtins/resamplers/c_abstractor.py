"""C-Abstractor resampler (Honeybee, Cha et al. 2024; adopted by Cambrian-1).

Input proj Linear(in -> hidden), reshape to ``[N, hidden, h, w]``; ``depth`` spatial
blocks; optional AdaptiveAvgPool2d to ``pool_size``; ``depth`` more blocks; back to
tokens; LayerNorm; MLP readout (Linear, GELU, Linear) to ``out_dim``.
Spatial block (seed): depthwise conv k7 -> LayerNorm2d -> pointwise hidden->mlp_ratio*hidden
-> SiLU -> squeeze-excitation -> pointwise back to hidden, + residual.

``forward(x [N, h*w, in_dim], grid) -> [N, P', out_dim]`` with ``P' = pool_size**2``
when pooling, else ``h*w``.
"""

from __future__ import annotations

import torch
from torch import nn

from cora_kit.interfaces import Grid, Resampler, ResamplerParams


class CAbstractorParams(ResamplerParams):
    hidden_dim: int = 1024
    depth: int = 3
    mlp_ratio: int = 4
    kernel_size: int = 7
    se_ratio: float = 0.25
    pool_size: int | None = None


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of ``[N, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    """``[N, C, H, W]`` -> same, channels scaled by sigmoid(MLP(mean over H, W))."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))


class SpatialBlock(nn.Module):
    """``[N, C, H, W]`` -> same: dwconv, LN2d, pw up, SiLU, SE, pw down, + residual."""

    def __init__(self, dim: int, mlp_ratio: int, kernel_size: int, se_ratio: float) -> None:
        super().__init__()
        inner = dim * mlp_ratio
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pw_up = nn.Conv2d(dim, inner, 1)
        self.act = nn.SiLU()
        self.se = SqueezeExcite(inner, max(1, int(dim * se_ratio)))
        self.pw_down = nn.Conv2d(inner, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw_down(self.se(self.act(self.pw_up(self.norm(self.dwconv(x))))))


class CAbstractorResampler(Resampler):
    """Convolutional abstractor keeping locality; ``[N,h*w,in] -> [N,P',out]``."""

    checkpoint_layer_lists = ("stage1", "stage2")

    def __init__(
        self,
        in_dim: int = 1152,
        out_dim: int = 1024,
        hidden_dim: int = 1024,
        depth: int = 3,
        mlp_ratio: int = 4,
        kernel_size: int = 7,
        se_ratio: float = 0.25,
        pool_size: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"c-abstractor kernel_size must be odd; got {kernel_size}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"c-abstractor pool_size must be >= 1 or None; got {pool_size}")
        self.in_dim, self.out_dim, self.pool_size = in_dim, out_dim, pool_size
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        blk = (hidden_dim, mlp_ratio, kernel_size, se_ratio)
        self.stage1 = nn.Sequential(*(SpatialBlock(*blk) for _ in range(depth)))
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if pool_size else nn.Identity()
        self.stage2 = nn.Sequential(*(SpatialBlock(*blk) for _ in range(depth)))
        self.norm = nn.LayerNorm(hidden_dim)
        self.readout = nn.Sequential(
            nn.Linear(hidden_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
        )

    def output_grid(self, grid: Grid) -> Grid:
        return (self.pool_size, self.pool_size) if self.pool_size else grid

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        h, w = grid
        if x.dim() != 3 or x.shape[1] != h * w or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"c-abstractor expects [N,{h * w},{self.in_dim}] for grid {tuple(grid)}; got {list(x.shape)}"
            )
        n = x.shape[0]
        f = self.input_proj(x).transpose(1, 2).reshape(n, -1, h, w)
        f = self.stage2(self.pool(self.stage1(f)))
        return self.readout(self.norm(f.flatten(2).transpose(1, 2)))
