"""Building the model's components from plugin names (the core never imports a plugin).

``build_components(config)`` creates tiler -> encoder -> resampler -> loss + overlap head
-> LLM (+ LoRA) -> stitcher + PanoramaProjector through the registry, each seeded by
``config.seed`` independently of the others' sizes, and checks that every plugin
implements its interface (``cora_kit.interfaces``): a plugin that does not is a one-line
``ConfigError`` pointing at ``cora-kit check-plugin``, not an ``AttributeError`` mid-run.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from cora_kit import interfaces as I
from cora_kit.config import CoraConfig, PluginChoice
from cora_kit.errors import ConfigError, PluginParamsError
from cora_kit.models.overlap_head import OverlapHead
from cora_kit.models.projector import PanoramaProjector
from cora_kit.registry import REGISTRY


@dataclass
class Components:
    """The built parts of a ``CoraModel`` (on CPU, or meta for shapes only)."""

    tiler: I.Tiler
    encoder: I.VisionEncoder
    resampler: I.Resampler
    loss_fn: I.OverlapLoss
    overlap_head: OverlapHead
    llm: I.LLMAdapter
    projector: PanoramaProjector
    latent_grid: tuple[int, int]


@contextmanager
def _seeded(seed: int, offset: int) -> Iterator[None]:
    """Deterministic init of one component, independent of the others' sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + offset)
        yield


def pretrained_options(choice: Any, section: str) -> dict[str, Any]:
    """Plugin kwargs of an encoder/LLM choice: options + ``pretrained`` or ``random_init`` +
    ``arch`` (+ ``tokenizer``, ``trust_remote_code`` for the LLM): ``interfaces.LLMParams``."""
    opts = dict(choice.options)
    if choice.pretrained is None:
        opts["random_init"] = True
    else:
        opts["pretrained"] = choice.pretrained
    if choice.arch:
        opts["arch"] = dict(choice.arch)
    if section == "model.llm":
        if choice.tokenizer is not None:
            opts["tokenizer"] = choice.tokenizer
        if choice.trust_remote_code:
            opts["trust_remote_code"] = True
    return opts


def create(kind: str, choice: PluginChoice, section: str, interface: type, options: dict[str, Any] | None = None) -> Any:
    """``REGISTRY.create`` (``options``, default: the choice's) + a ``ConfigError`` when the
    plugin does not implement ``interface`` (or leaves some of its methods abstract)."""
    factory = REGISTRY.lookup(kind, choice.name).factory
    if inspect.isclass(factory) and inspect.isabstract(factory):
        missing = ", ".join(sorted(factory.__abstractmethods__))
        raise ConfigError(
            f"{section}.name '{choice.name}': {factory.__name__} does not implement {missing} of"
            f" cora_kit.interfaces.{interface.__name__}; run 'cora-kit check-plugin {choice.name}'"
        )
    try:
        obj = REGISTRY.create(kind, choice.name, **(dict(choice.options) if options is None else options))
    except PluginParamsError as exc:
        raise ConfigError(f"{section}: {exc}") from exc
    if not isinstance(obj, interface):
        raise ConfigError(
            f"{section}.name '{choice.name}' built a {type(obj).__name__}, which does not implement"
            f" cora_kit.interfaces.{interface.__name__}; run 'cora-kit check-plugin {choice.name}'"
        )
    return obj


def _resampler_options(config: CoraConfig, encoder: I.VisionEncoder) -> dict[str, Any]:
    """The resampler's options plus ``in_dim`` (the encoder width) and ``out_dim``
    (``model.latent_dim``). A resampler whose params model has no ``out_dim`` (``identity``)
    cannot change the width: it gets ``in_dim`` only, and the latent width is the encoder's
    (the overlap head and the PanoramaProjector's Linear are sized from ``resampler.out_dim``)."""
    opts = dict(config.model.resampler.options)
    spec = REGISTRY.lookup("resampler", config.model.resampler.name)
    fields = spec.params_model.model_fields if spec.params_model is not None else {"in_dim": 0, "out_dim": 0}
    for key, value in (("in_dim", encoder.hidden_size), ("out_dim", config.model.latent_dim)):
        if key not in fields:
            continue
        if key in opts and opts[key] != value:
            raise ConfigError(
                f"model.resampler.options.{key}={opts[key]} conflicts with the model"
                f" ({key} is {value}: encoder width / model.latent_dim); drop the option"
            )
        opts[key] = value
    return opts


def _llm(config: CoraConfig) -> I.LLMAdapter:
    m = config.model.llm
    llm = create("llm", m, "model.llm", I.LLMAdapter, pretrained_options(m, "model.llm"))
    try:
        llm.enable_lora(m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules)
    except ValueError as exc:
        raise ConfigError(
            f"model.llm.lora.target_modules {m.lora.target_modules}: {exc} (LLM '{m.name}' puts LoRA on"
            f" {list(llm.lora_target_modules)} by default)"
        ) from None
    return llm


def build_components(config: CoraConfig) -> Components:
    """Every component of ``config`` (call under ``torch.device("meta")`` for shapes only)."""
    m, seed = config.model, config.seed
    tiler = create("tiler", m.tiler, "model.tiler", I.Tiler)
    with _seeded(seed, 1):
        encoder = create("encoder", m.encoder, "model.encoder", I.VisionEncoder, pretrained_options(m.encoder, "model.encoder"))
    with _seeded(seed, 2):
        resampler = create("resampler", m.resampler, "model.resampler", I.Resampler, _resampler_options(config, encoder))
    latent_dim = int(resampler.out_dim)  # model.latent_dim, or the encoder's for identity
    loss_fn = create("loss", m.loss, "model.loss", I.OverlapLoss)
    head = m.overlap_head
    with _seeded(seed, 3):
        overlap_head = OverlapHead(
            in_dim=latent_dim, hidden_dim=head.hidden_dim or latent_dim, out_dim=head.out_dim or latent_dim,
            dropout=head.dropout if head.dropout is not None else loss_fn.head_dropout,
        )
    with _seeded(seed, 4):
        llm = _llm(config)
    stitcher = create("stitcher", m.stitcher, "model.stitcher", I.Stitcher)
    latent_grid = tuple(resampler.output_grid(tuple(encoder.grid)))
    with _seeded(seed, 5):
        projector = PanoramaProjector(latent_dim, llm.hidden_size, stitcher, tiler.layout, latent_grid, pe=m.projector.pe,
                                        pe_scale=m.projector.pe_scale, out_scale=m.projector.out_scale)
    return Components(tiler, encoder, resampler, loss_fn, overlap_head, llm, projector, latent_grid)  # type: ignore[arg-type]


__all__ = ["Components", "build_components", "create", "pretrained_options"]
