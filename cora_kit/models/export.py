"""``cora-kit export``: a trained run -> a self-contained model folder, and its loader.

Folder layout (every weight file is safetensors; pickles are refused on load)::

    config.yaml          resolved config; encoder/LLM ``pretrained`` are folder-relative
    plugins.json         plugin names, versions, backends of the exported model
    export.json          format marker, source run, stages, sha256 of every weight file
    encoder/             encoder ``save_pretrained`` (+ preprocessor_config.json), or
    encoder.safetensors  its state dict when the encoder plugin has no HF model
    llm/                 LLM with LoRA merged (peft ``merge_and_unload``) + tokenizer
    resampler.safetensors  projector.safetensors  overlap_head.safetensors  [loss.safetensors]

``load_export`` rebuilds ``CoraModel`` from that config (no hub, no run folder) and loads
the component files strictly. The folder is written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from cora_kit.config import CoraConfig, to_yaml
from cora_kit.errors import CheckpointError, ConfigError

FORMAT = "cora-kit-export"
FORMAT_VERSION = 1
#: core modules saved as safetensors state dicts (attribute of CoraModel -> file)
MODULE_FILES = {
    "resampler": "resampler.safetensors",
    "projector": "projector.safetensors",
    "overlap_head": "overlap_head.safetensors",
    "loss_fn": "loss.safetensors",
}
#: suffixes of pickle-based weight formats (arbitrary code on load): never read
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_pickles(folder: Path) -> list[Path]:
    """Pickle-format files anywhere under ``folder`` (sorted)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(folder: Path) -> None:
    """``CheckpointError`` naming the first pickle file: exports hold safetensors only."""
    found = find_pickles(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise CheckpointError(
            f"refusing to load {found[0]}{more}: pickle files can run arbitrary code and a cora-kit"
            " export holds safetensors only; delete the file or re-export the run"
        )


# --- export -------------------------------------------------------------------------


def _hf_model(component: nn.Module) -> Any | None:
    """The transformers model inside a plugin (``.model`` with ``save_pretrained``)."""
    inner = getattr(component, "model", None)
    return inner if hasattr(inner, "save_pretrained") else None


def _save_encoder(encoder: nn.Module, out: Path, cfg: dict[str, Any]) -> list[str]:
    enc = cfg["model"]["encoder"]
    inner = _hf_model(encoder)
    if inner is None:  # not a transformers model: its whole state dict, built from the same config
        save_model(encoder, str(out / "encoder.safetensors"))
        return ["encoder.safetensors"]
    inner.save_pretrained(str(out / "encoder"), safe_serialization=True)
    mean, std = getattr(encoder, "mean", None), getattr(encoder, "std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        proc = {"do_normalize": True, "image_mean": mean.flatten().tolist(), "image_std": std.flatten().tolist()}
        (out / "encoder" / "preprocessor_config.json").write_text(json.dumps(proc, indent=2) + "\n")
    enc.update(pretrained="encoder", arch={})
    enc["options"] = {k: v for k, v in enc["options"].items() if k not in ("random_init", "pretrained", "arch")}
    return sorted(str(p.relative_to(out)) for p in (out / "encoder").glob("*.safetensors"))


def _untie_adapted_lm_head(peft_model: nn.Module) -> None:
    """Merging a LoRA on ``lm_head`` into weights tied to the input embeddings would change
    the embeddings too: give ``lm_head`` its own copy first (and record it untied)."""
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    config = getattr(base, "config", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if config is None or head is None or not getattr(config, "tie_word_embeddings", False):
        return
    layer = getattr(head, "base_layer", None)
    if layer is None:  # no adapter on lm_head: tying stays exact
        return
    layer.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
    config.tie_word_embeddings = False
    text_config = getattr(config, "get_text_config", lambda: None)()
    if text_config is not None and text_config is not config:
        text_config.tie_word_embeddings = False


def _save_llm(llm: nn.Module, out: Path, cfg: dict[str, Any]) -> list[str]:
    inner = getattr(llm, "model", None)
    tokenizer = getattr(llm, "tokenizer", None)
    if not hasattr(inner, "merge_and_unload") or not hasattr(tokenizer, "save_pretrained"):
        raise ConfigError(
            f"LLM plugin '{cfg['model']['llm']['name']}' does not hold a peft model and a tokenizer"
            " (.model.merge_and_unload, .tokenizer.save_pretrained); it cannot be exported"
        )
    _untie_adapted_lm_head(inner)
    merged = inner.merge_and_unload()  # LoRA folded into the base weights
    llm.model = merged
    llm.lora_enabled = False
    merged.save_pretrained(str(out / "llm"), safe_serialization=True)
    tokenizer.save_pretrained(str(out / "llm"))
    m = cfg["model"]["llm"]
    m.update(pretrained="llm", arch={}, tokenizer=None)
    m["options"] = {k: v for k, v in m["options"].items() if k not in ("random_init", "pretrained", "arch", "tokenizer")}
    return sorted(str(p.relative_to(out)) for p in (out / "llm").glob("*.safetensors"))


def export_model(model: Any, out_dir: str | Path, source: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``model`` (a loaded ``CoraModel``) as a self-contained folder ``out_dir``.

    The LLM is merged in place (the adapter is gone from ``model`` afterwards).
    ``source`` is recorded in export.json (run folder, stage files).
    """
    from cora_kit import __version__

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        cfg = model.config.model_dump(mode="json")
        plugins = model.plugin_metadata()
        files = _save_encoder(model.encoder, tmp, cfg)
        files += _save_llm(model.llm, tmp, cfg)
        for attr, name in MODULE_FILES.items():
            module = getattr(model, attr)
            if isinstance(module, nn.Module) and module.state_dict():
                save_model(module, str(tmp / name))
                files.append(name)
        config = CoraConfig.model_validate(cfg)
        (tmp / "config.yaml").write_text(
            "# exported by cora-kit; model.encoder.pretrained / model.llm.pretrained are relative to this folder\n"
            + to_yaml(config), encoding="utf-8")
        (tmp / "plugins.json").write_text(json.dumps(plugins, indent=2, default=str) + "\n", encoding="utf-8")
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cora_kit_version": __version__,
            "source": source, "lora_merged": True,
            "files": {f: _sha256(tmp / f) for f in sorted(files)},
        }
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path, sources: tuple[str | Path, ...] = (),
               overwrite: bool = False) -> Path:
    """Load a run folder (``cora_kit.inference.load_run``) and export it to ``out_dir``."""
    from cora_kit.inference import load_run

    model, info = load_run(run_dir, device="cpu", sources=sources)
    source = {"run": str(Path(run_dir).resolve()), "stages": {str(k): v for k, v in info.stages.items()},
              "notes": info.notes}
    return export_model(model, out_dir, source, overwrite=overwrite)


# --- load ---------------------------------------------------------------------------


def read_export_meta(folder: Path) -> dict[str, Any]:
    path = folder / "export.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a cora-kit export (no export.json); create one with `cora-kit export`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} v{meta.get('format_version')!r}; expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    return meta


def export_config(folder: Path) -> CoraConfig:
    """The folder's config with encoder/LLM paths made absolute (inside ``folder``)."""
    from cora_kit.inference import read_config

    config = read_config(folder / "config.yaml")
    data = config.model_dump(mode="json")
    for part in ("encoder", "llm"):
        rel = data["model"][part].get("pretrained")
        if rel is not None and not Path(rel).is_absolute():
            data["model"][part]["pretrained"] = str((folder / rel).resolve())
    return CoraConfig.model_validate(data)


def load_export(folder: str | Path, device: str = "auto") -> tuple[Any, Any]:
    """``(CoraModel, LoadInfo)`` of an exported folder: safetensors only, strict names,
    file hashes checked against export.json."""
    from cora_kit.inference import LoadInfo, resolve_device
    from cora_kit.pipeline import CoraModel

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--model {folder}: no such folder")
    refuse_pickles(folder)
    meta = read_export_meta(folder)
    for name, digest in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in export.json but missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: content differs from export.json (modified or truncated); re-export")
    config = export_config(folder)
    model = CoraModel.from_config(config, device="cpu")
    # the exported LLM has its LoRA merged; the freshly added adapter is zero: skip it
    if hasattr(model.llm, "set_lora_active") and getattr(model.llm, "lora_is_zero", lambda: False)():
        model.llm.set_lora_active(False)
    if (folder / "encoder.safetensors").is_file():
        _load_module(model.encoder, folder / "encoder.safetensors")
    for attr, name in MODULE_FILES.items():
        module = getattr(model, attr)
        path = folder / name
        if path.is_file():
            _load_module(module, path)
        elif isinstance(module, nn.Module) and module.state_dict():
            raise CheckpointError(f"{path}: missing ({attr} has weights to load)")
    model = model.to(resolve_device(device))
    model.eval()
    return model, LoadInfo(str(folder), "export", {}, [f"exported from {meta.get('source', {}).get('run', '?')}"])


def _load_module(module: nn.Module, path: Path) -> None:
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot load ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from config.yaml:"
            f" missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )


def summarize(folder: Path) -> dict[str, Any]:
    """Files and sizes of an export (for the CLI)."""
    meta = read_export_meta(folder)
    return {name: (folder / name).stat().st_size for name in meta["files"]}


__all__ = [
    "FORMAT",
    "export_config",
    "export_model",
    "export_run",
    "find_pickles",
    "load_export",
    "read_export_meta",
    "refuse_pickles",
    "summarize",
]
