"""Pipeline + training configuration: pydantic schema, presets, YAML, overrides.

Precedence: schema defaults (the seed design, i.e. the paper) < preset YAML
(``configs/<preset>.yaml``) < ``--config file.yaml`` < other layers (an experiment file's
``config:``) < typed CLI flags < ``--set key.path=value`` < plugin option flags
(``--resampler-opt``; parsed in ``cora_kit.plugin_options``). Unknown keys and bad values
are ``ConfigError``s naming the key, and the file and line that set it where there is one.
Over 400 lines: the schema, its YAML reader and its layering are one job, read together.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cora_kit.errors import ConfigError
from cora_kit.plugin_options import same_plugin, validate_plugin_choices, yaml_value

DEFAULT_PRESET = "tiny"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginChoice(_Strict):
    """A plugin by name plus its parameters (validated by the plugin's params model)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class ResamplerConfig(PluginChoice):
    """The resampler choice, plus ``options_by_name``: options by plugin name that the chosen
    plugin gets when no layer gives it options of its own (so a preset can size every built-in
    resampler alike: ``tiny`` gives each about 65k parameters, where the seed's widths would
    give c-abstractor 63M). Any spelling of the name matches (``cora-kit:mlp``, an alias)."""

    name: str = "bimamba"
    options_by_name: dict[str, dict[str, Any]] = Field(default_factory=dict)


class EncoderConfig(PluginChoice):
    name: str = "siglip2"
    #: local path or hub id for ``from_pretrained``; None builds from ``arch`` (random init)
    pretrained: str | None = "google/siglip2-so400m-patch16-256"
    #: architecture overrides for random-init construction (tiny preset, tests)
    arch: dict[str, Any] = Field(default_factory=dict)
    #: seed: only the last 2 blocks train in Stage 1
    num_trainable_blocks: int = Field(2, ge=0)


class LoraConfig(_Strict):
    r: int = Field(32, ge=1)
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class LLMConfig(PluginChoice):
    name: str = "qwen3"
    pretrained: str | None = "Qwen/Qwen3-0.6B"
    arch: dict[str, Any] = Field(default_factory=dict)
    #: tokenizer path/id; None: the one that comes with ``pretrained`` (or the packaged tiny one)
    tokenizer: str | None = None
    lora: LoraConfig = Field(default_factory=LoraConfig)
    max_text_tokens: int = Field(64, ge=8)
    #: where the vision tokens sit in the user turn: "before-query" is the seed's
    #: ``<|vision|>\n{query}``; "after-query" (``{query}\n<|vision|>``) lets a causal LM's vision
    #: positions attend to the query, which a small random-init LM needs to learn which part of
    #: the panorama a query asks about (the tiny preset; measured in benchmarks/RESULTS.md).
    vision_placement: Literal["before-query", "after-query"] = "before-query"
    trust_remote_code: bool = False
    #: "seed": the LM is frozen in Stage 2 and trains through LoRA in Stage 3 (the paper).
    #: "full": every LM weight also trains in Stages 2 and 3 - for a random-init LM (the
    #: tiny preset), which has no language to protect and cannot learn one through LoRA in
    #: minutes; the run's summary and plugins.json say so.
    trainable: Literal["seed", "full"] = "seed"


class OverlapHeadConfig(_Strict):
    """The seed's VICReg projector: Linear, LN, GELU, Dropout, Linear."""

    hidden_dim: int | None = None  # None: the latent dim
    out_dim: int | None = None  # None: the latent dim
    dropout: float | None = None  # None: what the loss asks for (0.0 VICReg, 0.1 contrastive)


class ProjectorConfig(_Strict):
    """PanoramaProjector: PE + Linear(latent -> LM) + stitcher."""

    pe: Literal["seed-yaw", "spherical", "none"] = "seed-yaw"
    #: the PE is multiplied by this before it is added (seed: 1; the sinusoids have norm
    #: sqrt(D/2), which can drown latents whose image-dependent part is small)
    pe_scale: float = Field(1.0, ge=0)
    #: the projected tokens are multiplied by this (seed: 1). A held random Linear gives the
    #: tiny preset's vision tokens ~5x the norm of the LM's text embeddings
    out_scale: float = Field(1.0, gt=0)


class ModelConfig(_Strict):
    latent_dim: int = Field(1024, ge=1)
    tiler: PluginChoice = Field(default_factory=lambda: PluginChoice(name="e2p"))
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    resampler: ResamplerConfig = Field(default_factory=ResamplerConfig)
    loss: PluginChoice = Field(default_factory=lambda: PluginChoice(name="vicreg"))
    correspondence_mode: Literal["geometric", "seed-strip"] = "geometric"
    stitcher: PluginChoice = Field(default_factory=lambda: PluginChoice(name="stride-views"))
    overlap_head: OverlapHeadConfig = Field(default_factory=OverlapHeadConfig)
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    #: recompute activations in backward instead of keeping them: the encoder's and the
    #: LLM's layers (their transformers switch) and the resampler's layer stack
    #: (torch.utils.checkpoint). Same gradients, less memory, ~1/3 more compute.
    gradient_checkpointing: bool = False


class StageConfig(_Strict):
    enabled: bool = True
    epochs: float = Field(1.0, gt=0)
    #: stop after this many optimizer steps (None: the epochs decide)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    #: the lr after warmup: cosine to 0 (the seed), or wsd (warmup-stable-decay: the peak lr
    #: held, then linear to 0 over the last ``decay_ratio`` of the steps)
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_ratio: float = Field(0.2, gt=0, le=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    grad_clip: float | None = 1.0
    #: weight of the overlap loss added to the LM loss (seed Stage 2: 0.1)
    overlap_weight: float = Field(0.0, ge=0)
    #: resampler lr = lr * this (seed Stage 2: "low lr"); 0 keeps it as it is in this stage
    resampler_lr_scale: float = Field(1.0, ge=0)
    #: PanoramaProjector lr = lr * this; 0 keeps it as it is in this stage (the tiny preset:
    #: a small random-init LM learns to read the panorama only while its vision tokens hold
    #: still, benchmarks/RESULTS.md "A tiny preset that looks")
    projector_lr_scale: float = Field(1.0, ge=0)
    #: the first N epochs present the items grouped by query kind (one block per kind, one
    #: kind at a time; the rest shuffled as usual): a curriculum for data whose items name a
    #: kind (the synthetic set v2); 0: every epoch shuffled
    kind_grouped_epochs: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)


def _stage1() -> StageConfig:
    return StageConfig(lr=1e-4, batch_size=8)


def _stage2() -> StageConfig:
    return StageConfig(lr=1e-4, grad_accum=8, overlap_weight=0.1, resampler_lr_scale=0.1, batch_size=4)


def _stage3() -> StageConfig:
    return StageConfig(lr=2e-6, batch_size=4)


class StagesConfig(_Strict):
    stage1: StageConfig = Field(default_factory=_stage1)
    stage2: StageConfig = Field(default_factory=_stage2)
    stage3: StageConfig = Field(default_factory=_stage3)


class SynthConfig(_Strict):
    n_train: int = Field(2000, ge=1)
    n_val: int = Field(200, ge=1)
    n_test: int = Field(200, ge=1)
    height: int = Field(512, ge=16)
    width: int = Field(1024, ge=32)
    seed: int = 0
    #: generator version (``cora_kit.data.synth``): 2 has query kinds; 1 stays reproducible
    version: int = Field(2, ge=1, le=2)
    #: None: the version's default (v1: 2, v2: 4 queries of distinct kinds)
    queries_per_image: int | None = Field(None, ge=1)
    #: processes rendering the set on first use (the files do not depend on it)
    workers: int = Field(1, ge=1)


class DataConfig(_Strict):
    #: dataset folder or CSV; None: the synthetic set (generated or reused under ``synth_dir``)
    path: str | None = None
    image_root: str | None = None
    synth_dir: str = "data/synth"
    synth: SynthConfig = Field(default_factory=SynthConfig)
    num_workers: int = Field(0, ge=0)
    on_bad_row: Literal["error", "skip"] = "error"
    #: what Stages 2-3 train on: all = every (image, query, annotation) row (the seed);
    #: first = each (image, query) with its first annotation; sample = one drawn per epoch
    train_targets: Literal["all", "first", "sample"] = "all"
    #: true for a configuration that needs real data (the paper-reproduction experiments):
    #: without ``path`` (``--data DIR``) it is an error instead of the synthetic set
    required: bool = False


class EvalConfig(_Strict):
    metrics: list[str] = Field(
        default_factory=lambda: ["bleu4", "meteor", "rouge_l", "cider", "spice", "exact-match"]
    )
    #: grouped: each prediction against all references of its (image, query) (cora-kit);
    #: paper: each reference row alone with the paper's implementations (cora_kit.eval.protocols)
    protocol: Literal["grouped", "paper"] = "grouped"
    #: at the end of each epoch: Stage 1 diagnostics on stage1_val (val_adj_cos ...), Stages
    #: 2-3 the LM loss on the val split's rows (val_loss), in metrics.jsonl (the seed's val_*)
    validation: bool = True
    max_new_tokens: int = Field(32, ge=1)
    num_beams: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    #: controls scored beside the trained model on the same test items
    #: (``cora_kit.eval.controls``): ``shuffled`` panoramas (another item's), ``blank`` (an
    #: in-distribution empty panorama, see ``blank``), ``text_prior`` (majority training
    #: answer per query template, no model; ``text-prior`` is accepted); [] evaluates the
    #: model alone
    controls: list[Literal["shuffled", "blank", "text_prior"]] = Field(
        default_factory=lambda: ["shuffled", "blank", "text_prior"]
    )
    #: the blank control: the scene without its objects (synthetic data), the panorama's
    #: mean colour, or auto (the first where possible)
    blank: Literal["auto", "objects-removed", "mean-colour"] = "auto"

    @field_validator("controls", mode="before")
    @classmethod
    def _control_names(cls, value: Any) -> Any:
        """``text-prior`` (the CLI's spelling) is ``text_prior`` (file and JSON key)."""
        if isinstance(value, list):
            return [v.replace("-", "_") if isinstance(v, str) else v for v in value]
        return value


class DistributedConfig(_Strict):
    """torchrun / DDP (``cora_kit.train.distributed``)."""

    #: seconds any collective may wait for the other ranks before failing (a dead or
    #: stuck rank then stops the run instead of hanging it)
    timeout_s: float = Field(1800.0, gt=0)


class FeatureCacheConfig(_Strict):
    """The frozen-encoder feature cache (``cora_kit.train.feature_cache``)."""

    #: storage dtype: bf16 halves disk and RAM (paper: 10.6 -> 5.3 MB per panorama per
    #: namespace); features are rounded once when computed, so cached and fresh agree
    dtype: Literal["fp32", "bf16"] = "fp32"


class LoggingConfig(_Strict):
    """Experiment trackers; ``metrics.jsonl`` is always written (``cora_kit.train.trackers``)."""

    #: trackers besides metrics.jsonl: tensorboard, wandb, mlflow (``jsonl`` alone: none)
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(default_factory=lambda: ["jsonl"])
    #: W&B project / MLflow experiment name
    project: str = "cora-kit"
    #: W&B group (e.g. one bench grid); None: none
    group: str | None = None
    #: W&B mode; None: wandb's own (WANDB_MODE, else online)
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    wandb_entity: str | None = None
    #: None: MLFLOW_TRACKING_URI, else sqlite:///<runs folder>/mlflow.db
    mlflow_tracking_uri: str | None = None


class CoraConfig(_Strict):
    """The whole run: model, data, three stages, evaluation."""

    preset: str = DEFAULT_PRESET
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: ``--batch-size auto``: per stage, choose the largest micro-batch that fits and make up
    #: the configured effective batch (batch_size x grad_accum x GPUs) by accumulation
    auto_batch: bool = False
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    feature_cache: FeatureCacheConfig = Field(default_factory=FeatureCacheConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


# --- YAML with line numbers ---------------------------------------------------

Source = tuple[str, int | None]  # (file or "CLI", line)


def _compose_lines(text: str, path: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML and record the line (1-based) of every mapping key path."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)

    if node is not None:
        walk(node, ())
    data = yaml.safe_load(text)
    return data, lines


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Read a config YAML file -> (mapping, key path -> line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data, lines = _compose_lines(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data, lines


def preset_path(name: str) -> Path:
    """The packaged YAML of preset ``name``."""
    files = resources.files("cora_kit.configs")
    candidate = files / f"{name}.yaml"
    if not candidate.is_file():
        known = available_presets()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown preset '{name}'{hint} Presets: {', '.join(known)}")
    return Path(str(candidate))


def available_presets() -> list[str]:
    files = resources.files("cora_kit.configs")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"stages.stage2.lr=3e-4"`` -> (["stages", "stage2", "lr"], 3e-4). Values are YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml_value(value)


@dataclass(frozen=True)
class _Set:
    """A ``--set`` value: it replaces what is there, even a mapping (no deep merge)."""

    value: Any


def _nested(keys: Sequence[str], value: Any) -> dict[str, Any]:
    """``(["a", "b"], v)`` -> ``{"a": {"b": _Set(v)}}``."""
    out: Any = _Set(value)
    for key in reversed(keys):
        out = {key: out}
    return out


def _merge(
    base: dict[str, Any],
    update: Mapping[str, Any],
    sources: dict[tuple[str, ...], Source],
    source_file: str,
    lines: Mapping[tuple[str, ...], int],
    prefix: tuple[str, ...] = (),
) -> None:
    # the one place where another plugin's name drops the old plugin's options
    kind = prefix[-1] if len(prefix) == 2 and prefix[0] == "model" else None
    name = _copy(update["name"]) if "name" in update else None
    if "name" in update and "options" in base and name != base.get("name"):
        if not (kind and same_plugin(kind, base.get("name"), name)):
            base["options"] = {}
    for key, value in update.items():
        path = (*prefix, str(key))
        sources[path] = (source_file, lines.get(path))
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, sources, source_file, lines, path)
        else:
            base[key] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, _Set):
        return _copy(value.value)
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _fields_at(path: tuple[str | int, ...]) -> list[str]:
    """Field names of the schema model reached by ``path`` (for did-you-mean)."""
    model: Any = CoraConfig
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _describe_error(exc: ValidationError, sources: Mapping[tuple[str, ...], Source]) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    src = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in sources:
            src = sources[loc[:n]]
            break
    where = ""
    if src is not None:
        file, line = src
        where = f"{file}" + (f" line {line}" if line else "") + ": "
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc[-1], _fields_at(loc[:-1]), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}unknown config key '{key}'{hint}"
    return f"{where}invalid value for '{key}': {err['msg']} (got {err.get('input')!r})"


@dataclass(frozen=True)
class ConfigLayer:
    """A mapping layered over the preset and ``--config`` file (an experiment file's
    ``config:`` section); ``lines`` (key path -> line) make errors name ``source`` and line."""

    source: str
    data: Mapping[str, Any]
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)


def override_layers(texts: Iterable[str], source: str) -> list[ConfigLayer]:
    """``key.path=value`` texts (what ``--set`` takes) as layers, for a place below the
    command line (an experiment sweep's ``set``); errors name ``source``."""
    out = []
    for text in texts:
        keys, value = parse_override(text)
        out.append(ConfigLayer(f"{source} {text!r}", _nested(keys, value)))
    return out


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    *,
    layers: Sequence[ConfigLayer] = (),
    plugin_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CoraConfig:
    """defaults < preset < config file < ``layers`` < ``extra`` (typed CLI flags) <
    ``overrides`` (``--set``) < ``plugin_options`` (``--resampler-opt`` etc.: kind ->
    options, layered over the options of whichever plugin the layers below chose).

    A layer that names another plugin drops the options the layers below gave the old one.
    """
    merged: dict[str, Any] = CoraConfig().model_dump()
    sources: dict[tuple[str, ...], Source] = {}
    file_data: dict[str, Any] = {}
    file_lines: dict[tuple[str, ...], int] = {}
    if config_file is not None:
        file_data, file_lines = load_yaml(config_file)
    chosen = preset or file_data.get("preset") or DEFAULT_PRESET
    ppath = preset_path(str(chosen))
    pdata, plines = load_yaml(ppath)
    _merge(merged, pdata, sources, f"preset '{chosen}' ({ppath.name})", plines)
    if file_data:
        _merge(merged, file_data, sources, str(config_file), file_lines)
    merged["preset"] = str(chosen)
    for layer in layers:
        _merge(merged, layer.data, sources, layer.source, layer.lines)
    if extra:
        _merge(merged, extra, sources, "command line", {})
    for text in overrides:
        keys, value = parse_override(text)
        _merge(merged, _nested(keys, value), sources, "command line", {})
    for kind, options in (plugin_options or {}).items():
        if options:
            _merge(merged, {"model": {kind: {"options": dict(options)}}}, sources, "command line", {})
    _apply_options_by_name(merged)
    try:
        config = CoraConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, sources)) from None
    _check_required_data(config, sources)
    return config


def _apply_options_by_name(merged: dict[str, Any]) -> None:
    """Each ``model.<kind>`` with ``options_by_name`` whose chosen plugin the layers gave no
    options: that plugin's entry becomes its options (options given replace it whole, as
    ``--set model.resampler.options=...`` replaces a preset's)."""
    for kind, choice in (merged.get("model") or {}).items():
        if not isinstance(choice, dict) or not isinstance(choice.get("options_by_name"), dict) or choice.get("options"):
            continue
        for name, defaults in choice["options_by_name"].items():
            if isinstance(defaults, dict) and same_plugin(kind, name, choice.get("name")):
                choice["options"] = dict(defaults)
                break


def _check_required_data(config: CoraConfig, sources: Mapping[tuple[str, ...], Source]) -> None:
    """``data.required`` without ``data.path``: a ConfigError naming ``--data`` and the file
    and line that asked for real data (the paper-reproduction experiments do)."""
    if not config.data.required or config.data.path:
        return
    file, line = sources.get(("data", "required"), ("configuration", None))
    where = f"{file}" + (f" line {line}" if line else "")
    raise ConfigError(
        f"{where}: data.required: this configuration runs on a real dataset, not the synthetic set;"
        " pass --data DIR (e.g. a QuIC-360 folder written by 'cora-kit data fetch')"
    )


def read_config_file(path: str | Path) -> CoraConfig:
    """A resolved ``config.yaml`` as written beside a run or an export, validated as it is
    (no preset layered under it); errors name the file and line."""
    data, lines = load_yaml(path)
    sources: dict[tuple[str, ...], Source] = {key: (str(path), line) for key, line in lines.items()}
    try:
        return CoraConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, sources)) from None


def to_yaml(config: CoraConfig) -> str:
    """The resolved config as YAML (what is written beside every result)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "ConfigLayer",
    "CoraConfig",
    "DataConfig",
    "DistributedConfig",
    "EncoderConfig",
    "EvalConfig",
    "FeatureCacheConfig",
    "LLMConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "PluginChoice",
    "ResamplerConfig",
    "StageConfig",
    "StagesConfig",
    "available_presets",
    "load_yaml",
    "override_layers",
    "read_config_file",
    "resolve_config",
    "to_yaml",
    "validate_plugin_choices",
]
