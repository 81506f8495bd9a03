"""``cora-kit export``: a trained run -> a self-contained model folder.

The folder's layout is ``cora_kit.serving.export_format``; ``cora_kit.serving.loading.
load_export`` rebuilds ``CoraModel`` from it (no hub, no run folder). The folder is written
under a temporary name and renamed, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from cora_kit import __version__
from cora_kit.config import CoraConfig, to_yaml
from cora_kit.errors import ConfigError
from cora_kit.pipeline import CoraModel
from cora_kit.serving.export_format import FORMAT, FORMAT_VERSION, MODULE_FILES, sha256_file
from cora_kit.serving.loading import load_run

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


def export_model(model: CoraModel, out_dir: str | Path, source: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``model`` (a loaded ``CoraModel``) as a self-contained folder ``out_dir``.

    The LLM is merged in place (the adapter is gone from ``model`` afterwards).
    ``source`` is recorded in export.json (run folder, stage files).
    """
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
            "files": {f: sha256_file(tmp / f) for f in sorted(files)},
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
    """Load a run folder (``cora_kit.serving.loading.load_run``) and export it to ``out_dir``."""
    model, info = load_run(run_dir, device="cpu", sources=sources)
    source = {"run": str(Path(run_dir).resolve()), "stages": {str(k): v for k, v in info.stages.items()},
              "notes": info.notes}
    return export_model(model, out_dir, source, overwrite=overwrite)


__all__ = ["export_model", "export_run"]
