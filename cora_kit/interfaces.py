"""The interface of every plugin kind, with the tensor shapes that are its contract.

``cora_kit.testing`` checks these contracts for built-ins and third-party plugins.

| kind      | input -> output                                                    |
|-----------|--------------------------------------------------------------------|
| tiler     | ERP ``[B,3,H,W]`` float -> views ``[B,V,3,s,s]`` + ``TileLayout``  |
| encoder   | ``[N,3,s,s]`` -> ``[N,P,Dv]`` on grid ``(h, w)``, ``P = h*w``      |
| resampler | ``[N,P,Din]`` -> ``[N,P',Dout]``, declares its output grid         |
| loss      | features ``[B,V,P,D]`` + ``Correspondences`` -> scalar + logs      |
| stitcher  | ``[B,V,P,D]`` + layout -> ``[B,T,D]`` + per-token positions        |
| llm       | tokenizer + ``inputs_embeds`` causal LM + LoRA                     |
| metric    | predictions + grouped references -> ``{name: value}``              |
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from cora_kit.geometry import Correspondences, TileLayout

Grid = tuple[int, int]


class PluginParams(BaseModel):
    """Base class of plugin parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ResamplerParams(PluginParams):
    """Parameters every resampler accepts (seed: SigLIP2 1152 -> latent 1024)."""

    in_dim: int = 1152
    out_dim: int = 1024


# --- tiler ------------------------------------------------------------------


@dataclass
class TiledViews:
    """Output of a tiler: ``views`` ``[B,V,3,s,s]`` float in [0, 1] and the layout."""

    views: torch.Tensor
    layout: TileLayout


class Tiler(abc.ABC):
    """ERP panorama -> views. ``layout`` is fixed at construction."""

    layout: TileLayout

    @abc.abstractmethod
    def __call__(self, erp: torch.Tensor) -> TiledViews:
        """``erp`` ``[B,3,H,W]`` (uint8 or float in [0,1]) -> ``TiledViews``."""


# --- encoder ----------------------------------------------------------------


class VisionEncoder(nn.Module, abc.ABC):
    """Per-view patch encoder.

    ``forward(pixels [N,3,s,s] float in [0,1]) -> [N,P,Dv]`` with ``P = grid[0]*grid[1]``.
    The split ``forward_frozen`` / ``forward_trainable`` lets the pipeline cache the
    frozen prefix: ``forward(x) == forward_trainable(forward_frozen(x, k), k)``.
    """

    image_size: int
    grid: Grid
    hidden_size: int
    num_blocks: int

    @abc.abstractmethod
    def forward_frozen(self, pixels: torch.Tensor, num_trainable_blocks: int) -> torch.Tensor:
        """``[N,3,s,s]`` -> hidden states ``[N,P,Dv]`` before the last k blocks."""

    @abc.abstractmethod
    def forward_trainable(self, hidden: torch.Tensor, num_trainable_blocks: int) -> torch.Tensor:
        """Hidden states ``[N,P,Dv]`` -> final features ``[N,P,Dv]`` (last k blocks + norm)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_trainable(self.forward_frozen(pixels, 0), 0)

    @abc.abstractmethod
    def trainable_block_parameters(self, num_trainable_blocks: int) -> list[nn.Parameter]:
        """Parameters of the last k blocks (and what follows them)."""

    def cache_key(self) -> str:
        """Identifies the weights + config for the feature cache."""
        return type(self).__name__


# --- resampler --------------------------------------------------------------


class Resampler(nn.Module, abc.ABC):
    """``forward(x [N,P,Din], grid) -> [N,P',Dout]``; keeps P unless it declares a new grid."""

    in_dim: int
    out_dim: int
    #: backend actually used by this instance (e.g. "torch scan", "mamba-ssm CUDA")
    backend: str = "torch"

    def output_grid(self, grid: Grid) -> Grid:
        """Token grid after resampling, for an input grid ``(h, w)``."""
        return grid

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor: ...


# --- overlap loss -----------------------------------------------------------


class OverlapLoss(nn.Module, abc.ABC):
    """Self-supervised loss on what overlapping views see.

    ``forward(features [B,V,P,D], correspondences, grid) -> (scalar, logs)`` where view
    ``v`` of ``features`` is view ``correspondences.view_indices[v]`` of the layout.

    A loss that needs two stochastic views of the same features (the seed's InfoNCE:
    two dropout masks of the overlap head) sets ``two_views = True`` and accepts
    ``second_view=`` (``[B,V,P,D]``, the second head pass) as a keyword argument.
    """

    #: True when ``forward`` takes ``second_view=`` (a second overlap-head pass)
    two_views: bool = False

    #: dropout of the overlap head this loss expects (seed: 0.0 VICReg, 0.1 contrastive)
    head_dropout: float = 0.0

    #: True when the loss is exactly 0 for features that agree on every correspondence
    #: (enables the conformance check ``check_zero_for_identical_pairs``)
    zero_for_identical_pairs: bool = False

    @abc.abstractmethod
    def forward(
        self, features: torch.Tensor, correspondences: Correspondences, grid: Grid
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


# --- stitcher ---------------------------------------------------------------


@dataclass
class TokenPositions:
    """Per stitched token: ``lon``/``lat`` (radians, ``[T]``), ``view``/``row``/``col`` (``[T]``)."""

    lon: torch.Tensor
    lat: torch.Tensor
    view: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor

    def __len__(self) -> int:
        return int(self.view.numel())


@dataclass
class StitchedTokens:
    """``tokens`` ``[B,T,D]`` and their ``positions`` (length T)."""

    tokens: torch.Tensor
    positions: TokenPositions


class Stitcher(abc.ABC):
    """Views' tokens -> one sequence. Selection depends only on layout and grid."""

    @abc.abstractmethod
    def select(self, layout: TileLayout, grid: Grid) -> TokenPositions:
        """Which (view, row, col) tokens are kept, in output order, with lon/lat."""

    def __call__(self, features: torch.Tensor, layout: TileLayout, grid: Grid) -> StitchedTokens:
        """``features`` ``[B,V,P,D]`` -> ``StitchedTokens`` ``[B,T,D]``."""
        if features.dim() != 4 or features.shape[1] != layout.num_views:
            raise ValueError(
                f"stitcher expects features [B,{layout.num_views},P,D]; got {list(features.shape)}"
            )
        if features.shape[2] != grid[0] * grid[1]:
            raise ValueError(
                f"stitcher expects P = {grid[0]}*{grid[1]} tokens per view; got {features.shape[2]}"
            )
        pos = self.select(layout, grid)
        flat = (pos.row * grid[1] + pos.col).to(features.device)
        tokens = features[:, pos.view.to(features.device), flat]
        return StitchedTokens(tokens=tokens, positions=pos)


# --- language model ---------------------------------------------------------


class LLMAdapter(nn.Module, abc.ABC):
    """A causal LM driven through ``inputs_embeds``, its tokenizer and LoRA.

    The tokenizer has the special token ``vision_token`` (``<|vision|>``).
    """

    vision_token: str = "<|vision|>"
    tokenizer: Any
    hidden_size: int

    @property
    @abc.abstractmethod
    def vision_token_id(self) -> int: ...

    @abc.abstractmethod
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B,L]`` token ids -> ``[B,L,D_lm]`` embeddings."""

    @abc.abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """Returns an object with ``.logits`` ``[B,L,V]`` and ``.loss`` when labels are given."""

    @abc.abstractmethod
    def enable_lora(self, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> None:
        """Wrap the LM with peft LoRA adapters; only adapter weights stay trainable."""

    @abc.abstractmethod
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int = 32,
        num_beams: int = 1,
    ) -> list[str]:
        """Decode answers for a batch of fused prompts (``[B,L,D_lm]``)."""


# --- metric -----------------------------------------------------------------


class Metric(abc.ABC):
    """Caption metric on grouped references (all references of one (image, query))."""

    def available(self) -> tuple[bool, str | None]:
        """``(True, None)`` or ``(False, "unavailable: reason")``."""
        return True, None

    @abc.abstractmethod
    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        """``{metric_name: value}`` (the first key is the headline value)."""


__all__ = [
    "Grid",
    "LLMAdapter",
    "Metric",
    "OverlapLoss",
    "PluginParams",
    "Resampler",
    "ResamplerParams",
    "StitchedTokens",
    "Stitcher",
    "TiledViews",
    "Tiler",
    "TokenPositions",
    "VisionEncoder",
]
