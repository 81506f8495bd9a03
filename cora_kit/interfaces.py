"""The interface of every plugin kind, with the tensor shapes that are its contract.

This module is complete: it declares everything the core ever calls or reads on a plugin
(the core never probes a plugin for an undeclared attribute), and ``cora_kit.testing``
checks each of those methods for built-ins and third-party plugins. docs/plugins.md is the
guide; the optional protocols at the end (``TokenizedMetric``, ``ItemScoredMetric``) are
extras the scorer uses when a metric offers them. (Over 400 lines on purpose: DESIGN
section 1 puts every kind's complete interface in this one module.)

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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cora_kit.geometry import Correspondences, TileLayout

Grid = tuple[int, int]


# --- gradient checkpointing (``model.gradient_checkpointing: true``) ------------------


def hf_gradient_checkpointing(model: Any, enabled: bool) -> str:
    """Turn the transformers model's own switch on/off (non-reentrant; transformers >= 5.x
    names it ``activation_checkpointing_*``, earlier ``gradient_checkpointing_*``); returns
    what was done, or ``""`` when ``model`` has no such switch."""
    for prefix in ("activation", "gradient"):
        if hasattr(model, f"{prefix}_checkpointing_enable"):
            break
    else:
        return ""
    if not enabled:
        getattr(model, f"{prefix}_checkpointing_disable")()
        return "off"
    getattr(model, f"{prefix}_checkpointing_enable")(**{f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}})
    return f"transformers {prefix}_checkpointing_enable (every layer, non-reentrant)"


def keep_checkpointing_when_frozen(module: nn.Module) -> None:
    """transformers checkpoints a layer only while ``layer.training``; the pipeline keeps a
    frozen module in eval mode, yet Stage 2 back-propagates through the frozen LLM. After
    any ``train(mode)``, flag just the checkpointed layers (their submodules - attention,
    dropout - keep their mode; checkpointing still needs grad, so no_grad decoding is
    untouched)."""
    for sub in module.modules():
        if getattr(sub, "gradient_checkpointing", False) is True and hasattr(type(sub), "gradient_checkpointing"):
            sub.training = True


def checkpoint_modules(modules: Sequence[nn.Module], enabled: bool) -> int:
    """Make each module recompute its forward in backward (``torch.utils.checkpoint``,
    non-reentrant, RNG state preserved so dropout masks repeat) whenever grad is on.
    The instance's ``forward`` is wrapped, so parameter names are unchanged."""
    from torch.utils.checkpoint import checkpoint

    for module in modules:
        if not enabled:
            module.__dict__.pop("forward", None)  # back to the class's forward
            continue
        if "forward" in module.__dict__:
            continue
        original = module.forward

        def forward(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        module.forward = forward  # type: ignore[method-assign]
    return len(modules)


class PluginParams(BaseModel):
    """Base class of plugin parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ResamplerParams(PluginParams):
    """Parameters every resampler accepts (seed: SigLIP2 1152 -> latent 1024). The
    pipeline passes ``in_dim`` (the encoder's width) and ``out_dim`` (``model.latent_dim``).
    A resampler that cannot change the width declares ``in_dim`` only (``identity``): it
    gets no ``out_dim``, and its ``out_dim`` attribute (= ``in_dim``) sizes the latent."""

    in_dim: int = 1152
    out_dim: int = 1024


class PretrainedParams(PluginParams):
    """What the pipeline passes to an encoder or LLM adapter, from its config section:

    * ``pretrained=<path or hub id>`` when ``model.<part>.pretrained`` is set (load those
      weights, from disk only), else ``random_init=True`` (build ``arch`` without weights);
    * ``arch={...}`` when ``model.<part>.arch`` is non-empty (architecture overrides of a
      random-init build);
    * after ``cora-kit export``: ``pretrained=<folder>`` written by ``save_pretrained``.

    Subclass it (or declare the same fields) so the params model accepts them.
    """

    pretrained: str | None = None
    random_init: bool = False
    arch: dict[str, Any] = Field(default_factory=dict)


class EncoderParams(PretrainedParams):
    """Parameters the pipeline passes to a vision encoder (see ``PretrainedParams``)."""


class LLMParams(PretrainedParams):
    """Parameters the pipeline passes to an LLM adapter: those of ``PretrainedParams`` plus
    ``tokenizer=<path or id>`` when ``model.llm.tokenizer`` is set (None: the adapter's
    own choice) and ``trust_remote_code=True`` when ``model.llm.trust_remote_code`` is."""

    tokenizer: str | None = None
    trust_remote_code: bool = False


class Reported:
    """Attributes every plugin may set and ``plugins.json`` records: ``backend`` (what this
    instance actually runs, e.g. "mamba-ssm CUDA"; None: the registered backend) and
    ``source`` (where its weights came from, e.g. "pretrained:/path")."""

    backend: str | None = None
    source: str | None = None


# --- tiler ------------------------------------------------------------------


@dataclass
class TiledViews:
    """Output of a tiler: ``views`` ``[B,V,3,s,s]`` float in [0, 1] and the layout."""

    views: torch.Tensor
    layout: TileLayout


class Tiler(Reported, abc.ABC):
    """ERP panorama -> views. ``layout`` is fixed at construction."""

    layout: TileLayout

    @abc.abstractmethod
    def __call__(self, erp: torch.Tensor) -> TiledViews:
        """``erp`` ``[B,3,H,W]`` (uint8 or float in [0,1]) -> ``TiledViews``.

        The data path (training, evaluation, captioning) passes panoramas as decoded:
        uint8 on the CPU in HWC memory (``read_erp(path, dtype=torch.uint8)``, a
        channels-last view of the decoder's array, no copy). The views must not depend on
        the memory layout (``check_memory_layout``). Float input may need gradients or
        live on a GPU."""


# --- encoder ----------------------------------------------------------------


class VisionEncoder(Reported, nn.Module, abc.ABC):
    """Per-view patch encoder; its factory accepts ``EncoderParams``.

    ``forward(pixels [N,3,s,s] float in [0,1]) -> [N,P,Dv]`` with ``P = grid[0]*grid[1]``.
    The split ``forward_frozen`` / ``forward_trainable`` lets the pipeline cache the
    frozen prefix: ``forward(x) == forward_trainable(forward_frozen(x, k), k)``.
    """

    #: side ``s`` of the square views it expects; token grid ``(h, w)``; width ``Dv``
    image_size: int
    grid: Grid
    hidden_size: int
    #: number of blocks; ``num_trainable_blocks`` k of the config is in ``[0, num_blocks]``
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

    def save_pretrained(self, folder: Path) -> list[str] | None:
        """Write the weights to ``folder`` (safetensors only) in a form that the factory
        loads back with ``pretrained=str(folder)``; return the weight files written
        (relative to ``folder``). ``None`` (the default): the encoder has no such format,
        and ``cora-kit export`` stores its state dict and rebuilds it from the config."""
        return None

    def summary_notes(self) -> list[str]:
        """Lines ``cora-kit model-summary`` prints about this encoder (e.g. weights that are
        loaded but never run)."""
        return []

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        """``model.gradient_checkpointing``: recompute the blocks' activations in backward
        instead of keeping them, whenever gradients flow. Returns what was done (``"off"``
        when disabling), or ``""`` (the default) when this encoder cannot: the pipeline then
        reports it. Transformers-based encoders call ``hf_gradient_checkpointing``."""
        return ""

    def train(self, mode: bool = True) -> VisionEncoder:
        super().train(mode)
        keep_checkpointing_when_frozen(self)
        return self


# --- resampler --------------------------------------------------------------


class Resampler(Reported, nn.Module, abc.ABC):
    """``forward(x [N,P,Din], grid) -> [N,P',Dout]``; keeps P unless it declares a new grid.
    Its factory accepts ``ResamplerParams``."""

    in_dim: int
    out_dim: int
    #: backend actually used by this instance (e.g. "torch scan", "mamba-ssm CUDA")
    backend: str | None = "torch"
    #: attributes holding the layer stack (``nn.ModuleList`` / ``nn.Sequential``) whose
    #: members ``set_gradient_checkpointing`` wraps
    checkpoint_layer_lists: tuple[str, ...] = ("blocks", "layers")

    def output_grid(self, grid: Grid) -> Grid:
        """Token grid after resampling, for an input grid ``(h, w)``."""
        return grid

    def checkpoint_layers(self) -> list[nn.Module]:
        """The layers ``set_gradient_checkpointing`` wraps: the members of the stacks
        (``nn.ModuleList`` / ``nn.Sequential``) named in ``checkpoint_layer_lists``."""
        stacks = [getattr(self, name, None) for name in self.checkpoint_layer_lists]
        return [m for stack in stacks if isinstance(stack, nn.ModuleList | nn.Sequential) for m in stack]

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        """``model.gradient_checkpointing``: checkpoint every layer of ``checkpoint_layers()``
        (``torch.utils.checkpoint``); returns what was done, ``""`` when there is none."""
        layers = self.checkpoint_layers()
        if not layers:
            return ""
        checkpoint_modules(layers, enabled)
        return f"torch.utils.checkpoint on {len(layers)} layers" if enabled else "off"

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor: ...


# --- overlap loss -----------------------------------------------------------


class OverlapLoss(Reported, nn.Module, abc.ABC):
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


class Stitcher(Reported, abc.ABC):
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


class LLMAdapter(Reported, nn.Module, abc.ABC):
    """A causal LM driven through ``inputs_embeds``, its tokenizer and LoRA.

    The factory accepts ``LLMParams``. ``tokenizer`` is a transformers tokenizer with a
    chat template, an eos token and the single special token ``vision_token``
    (``<|vision|>``, which the adapter adds); the core calls it as ``tokenizer(text,
    add_special_tokens=False)["input_ids"]``, ``apply_chat_template``,
    ``convert_tokens_to_ids`` and reads ``eos_token_id``, ``pad_token_id``,
    ``unk_token_id`` and ``chat_template``. Shapes: ``B`` prompts, ``L`` tokens, ``D``
    = ``hidden_size``, ``V`` vocabulary.
    """

    vision_token: str = "<|vision|>"
    tokenizer: Any
    #: width ``D`` of the embeddings the LM takes
    hidden_size: int
    #: number of transformer layers and vocabulary size (``cora-kit model-summary``'s memory estimate)
    num_layers: int
    vocab_size: int
    #: module names LoRA wraps by default (the conformance checks; configs set
    #: ``model.llm.lora.target_modules``, seed: the 7 Qwen3 projections)
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    @property
    @abc.abstractmethod
    def vision_token_id(self) -> int:
        """Id of ``vision_token`` in ``tokenizer`` (a property)."""

    @abc.abstractmethod
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B,L]`` token ids -> ``[B,L,D]`` embeddings."""

    @abc.abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """``inputs_embeds`` ``[B,L,D]``, ``attention_mask`` ``[B,L]`` (1 = token), ``labels``
        ``[B,L]`` (-100 = ignored) -> an object with ``.logits`` ``[B,L,V]`` and ``.loss`` (a
        0-dim tensor, the mean next-token cross-entropy) when labels are given."""

    def answer_loss(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The training loss: ``forward(...).loss`` for ``inputs_embeds`` ``[B,L,D]``, mask and
        ``labels`` ``[B,L]`` (a 0-dim tensor). The default calls ``forward``; an adapter may
        compute logits only at the positions that predict a label (the same value: answers are
        a few of the ``L`` positions, and the ``[B,L,V]`` logits are most of an LM step's
        memory at a real vocabulary). The conformance kit checks the two agree."""
        return self.forward(inputs_embeds, attention_mask, labels=labels).loss

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        """``model.gradient_checkpointing``: recompute the decoder layers in backward,
        whenever gradients flow (also through the frozen LM of Stage 2, which stays in eval
        mode). Returns what was done (``"off"`` when disabling), or ``""`` (the default)
        when this adapter cannot; transformers-based adapters call
        ``hf_gradient_checkpointing``."""
        return ""

    def train(self, mode: bool = True) -> LLMAdapter:
        super().train(mode)
        keep_checkpointing_when_frozen(self)
        return self

    @abc.abstractmethod
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int = 32,
        num_beams: int = 1,
    ) -> list[str]:
        """Decode answers for a batch of left-padded fused prompts ``[B,L,D]`` (mask ``[B,L]``):
        greedy for ``num_beams=1``, beam search otherwise, at most ``max_new_tokens`` each;
        returns B strings without special tokens."""

    # -- LoRA ------------------------------------------------------------------

    @abc.abstractmethod
    def enable_lora(self, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> None:
        """Add LoRA adapters (rank ``r``, scale ``alpha / r``) on ``target_modules``; base
        weights frozen, only adapter weights trainable; zero-initialised (a no-op until
        trained). A ``ValueError`` when a target module does not exist."""

    @abc.abstractmethod
    def lora_parameters(self) -> list[nn.Parameter]:
        """The adapter weights (empty before ``enable_lora`` and after ``merge_lora``)."""

    @abc.abstractmethod
    def lora_is_zero(self) -> bool:
        """True while the adapters do not change the LM (e.g. every LoRA B matrix is 0)."""

    @abc.abstractmethod
    def set_lora_active(self, active: bool) -> None:
        """Run (True) or skip (False) the adapter layers. The pipeline skips zero adapters
        before Stage 3 (saves their compute); skipping non-zero adapters would change the
        model and must raise ``RuntimeError``. A no-op without adapters."""

    # -- export -----------------------------------------------------------------

    @abc.abstractmethod
    def merge_lora(self) -> None:
        """Fold the adapters into the base weights (the LM's outputs stay the same);
        afterwards ``lora_parameters()`` is empty. ``cora-kit export`` calls it."""

    @abc.abstractmethod
    def save_pretrained(self, folder: Path) -> list[str]:
        """Write the LM (safetensors only) and its tokenizer to ``folder`` so that the
        factory rebuilds the same model with ``pretrained=str(folder)`` (tokenizer None);
        return the weight files written (relative to ``folder``)."""


# --- metric -----------------------------------------------------------------


class Metric(Reported, abc.ABC):
    """Caption metric on grouped references (all references of one (image, query))."""

    #: headline score key (None: the registered name with ``-`` -> ``_``)
    key: str | None = None
    #: True for metrics that run a separate process (java): the scorer calls ``start()``
    #: first, scores them on a worker thread while the others run, then calls ``close()``
    background: bool = False

    def available(self) -> tuple[bool, str | None]:
        """``(True, None)`` or ``(False, "unavailable: reason")``."""
        return True, None

    @abc.abstractmethod
    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        """``{metric_name: value}`` (the first key is the headline value). A prediction id
        without references (or the reverse) is a ``ValueError`` naming the id."""

    def start(self) -> None:
        """Start what ``score`` needs (e.g. a JVM) before scoring; a no-op by default."""

    def close(self) -> None:
        """Release what ``start`` started; a no-op by default."""


@runtime_checkable
class TokenizedMetric(Protocol):
    """Optional metric protocol: metrics with equal ``tokenizer_key`` share one tokenisation
    (the COCO metrics: PTB tokens). ``score_tokenized(*tokenize(p, r)) == score(p, r)``."""

    tokenizer_key: str

    def tokenize(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """-> (``{id: [tokenised prediction]}``, ``{id: [tokenised refs...]}``)."""
        ...

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]: ...


@runtime_checkable
class ItemScoredMetric(TokenizedMetric, Protocol):
    """Optional: per-id scores for paired comparisons (bench's bootstrap CIs)."""

    def score_items_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        """``{id: value}`` for every id of ``gts``."""
        ...


@runtime_checkable
class PerItemMetric(Protocol):
    """Optional: per-id values without a shared tokenisation (``exact-match``); the
    metric's value is their mean."""

    def score_items(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        """``{id: value}`` for every id of ``predictions``."""
        ...


@runtime_checkable
class KindScoredMetric(Protocol):
    """Optional: also one value per query kind, when the data names each item's kind
    (the ``kind`` column; ``references.jsonl`` rows' ``"kind"``)."""

    def score_kinds(
        self,
        predictions: Mapping[str, str],
        references: Mapping[str, Sequence[str]],
        kinds: Mapping[str, str | None],
    ) -> dict[str, float]:
        """What ``score`` returns plus ``<key>/<kind>`` for every kind named in ``kinds``
        (id -> kind; ids without one count in the overall value only)."""
        ...


__all__ = [
    "EncoderParams",
    "Grid",
    "ItemScoredMetric",
    "KindScoredMetric",
    "PerItemMetric",
    "LLMAdapter",
    "LLMParams",
    "Metric",
    "OverlapLoss",
    "PluginParams",
    "PretrainedParams",
    "Reported",
    "Resampler",
    "ResamplerParams",
    "StitchedTokens",
    "Stitcher",
    "TiledViews",
    "Tiler",
    "TokenPositions",
    "TokenizedMetric",
    "VisionEncoder",
    "checkpoint_modules",
    "hf_gradient_checkpointing",
    "keep_checkpointing_when_frozen",
]
