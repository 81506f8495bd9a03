"""``CoraModelLike``: everything the training engine, the reports and serving call on a model.

``cora_kit.pipeline.CoraModel`` is the implementation; the engine (``cora_kit.train``)
sits below the pipeline and never imports it, so it is written against this protocol and
gets the model from a ``ModelFactory`` (``CoraModel.from_config``, or a small stand-in in
tests). Shapes: ``B`` panoramas, ``V`` views, ``P`` tokens per view, ``Dv`` encoder width,
``D`` latent width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from cora_kit.config import CoraConfig, StageConfig
from cora_kit.geometry import Correspondences, TileLayout


@runtime_checkable
class CoraModelLike(Protocol):
    """A ``torch.nn.Module`` with the CORA model's stage API (see ``cora_kit.pipeline``)."""

    config: CoraConfig
    layout: TileLayout
    #: token grid of the encoder ``(h, w)`` and of the resampler output
    grid: tuple[int, int]
    latent_grid: tuple[int, int]
    #: exact overlap correspondences between the tiles of the latent grid
    correspondences: Correspondences
    #: the overlap head (Stage-1 diagnostics run it on latent tiles ``[B,T,P,D]``)
    overlap_head: nn.Module
    #: the resampler module (stages 2-3: while it does not train, in eval mode, the
    #: trainer makes each image's latent once; ``cora_kit.train.held_latents``)
    resampler: nn.Module
    training: bool

    # -- vision path ------------------------------------------------------------------
    def tile(self, erp: torch.Tensor) -> torch.Tensor:
        """ERP ``[B,3,H,W]`` (uint8, or float in [0,1]) -> views ``[B,V,3,s,s]``. A model
        that also has a ``tiler`` attribute (the Tiler plugin) gets that light object
        called in DataLoader workers instead of this method (``cora_kit.data.tile_function``)."""
        ...

    def encoder_cache_key(self, stage: int) -> str:
        """Key of the frozen encoder prefix of ``stage`` (feature cache)."""
        ...

    def encode_frozen(self, views: torch.Tensor, stage: int) -> torch.Tensor:
        """``[B,V,3,s,s]`` -> ``[B,V,P,Dv]``, no grad."""
        ...

    def encode_trainable(self, hidden: torch.Tensor, stage: int) -> torch.Tensor:
        """``[B,V,P,Dv]`` -> ``[B,V,P,Dv]`` (Stage 1: the last k blocks)."""
        ...

    def resample(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B,V,P,Dv]`` -> latent ``[B,V,P',D]``."""
        ...

    # -- losses and decoding ------------------------------------------------------------
    def overlap_loss(self, latent: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...

    def lm_loss(
        self, latent: torch.Tensor, queries: list[str], answers: list[str]
    ) -> tuple[torch.Tensor, dict[str, float]]: ...

    def generate(
        self, latent: torch.Tensor, queries: list[str], max_new_tokens: int = 32, num_beams: int = 1
    ) -> list[str]: ...

    # -- freeze schedule and checkpoints ------------------------------------------------------
    def set_stage(self, stage: int) -> dict[str, int]:
        """Freeze all but ``stage``'s groups; ``{group: trainable parameters}``."""
        ...

    def param_groups(self, stage: int, stage_cfg: StageConfig) -> list[dict[str, Any]]: ...

    def trainable_state_dict(self, stage: int) -> dict[str, torch.Tensor]: ...

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None: ...

    def weights_fingerprint(self) -> str:
        """Hash of every parameter of the freshly built model (``weights_fingerprint.txt``)."""
        ...

    def plugin_metadata(self) -> dict[str, Any]:
        """Per plugin kind: name, distribution, version, backend (``plugins.json``)."""
        ...

    # -- the nn.Module methods the engine uses ---------------------------------------------
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...


#: builds the model of a run: ``factory(config, device)``, seeded by ``config.seed``
ModelFactory = Callable[[CoraConfig, torch.device], CoraModelLike]

__all__ = ["CoraModelLike", "ModelFactory"]
