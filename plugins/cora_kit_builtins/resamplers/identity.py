"""Identity resampler: keeps tokens as they are, ``[N,P,D] -> [N,P,D]``, no parameters.

It cannot change the token width, so its parameters have ``in_dim`` only (no ``out_dim``):
the pipeline then makes the latent width the encoder's (1152 in the paper preset, 64 in
tiny) instead of ``model.latent_dim``, and sizes the overlap head and the
PanoramaProjector's Linear (latent -> LLM width) from it. That is how identity builds in
every preset: the only learnt map from vision to language is the projector's, as in a
"no resampler" baseline.
"""

from __future__ import annotations

import torch

from cora_kit.interfaces import Grid, PluginParams, Resampler


class IdentityParams(PluginParams):
    """``in_dim``: the token width, in and out (the pipeline sets it to the encoder width)."""

    in_dim: int = 1152


class IdentityResampler(Resampler):
    """``[N,P,D]`` -> ``[N,P,D]`` unchanged; no parameters; ``out_dim == in_dim``."""

    def __init__(self, in_dim: int = 1152) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"identity expects [N,P,{self.in_dim}]; got {list(x.shape)}")
        return x
