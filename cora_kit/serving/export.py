"""``cora-kit export``: a trained run -> a self-contained model folder.

The folder's layout is ``cora_kit.serving.export_format``; ``cora_kit.serving.loading.
load_export`` rebuilds ``CoraModel`` from it (no hub, no run folder). The folder is written
under a temporary name and renamed, so a failed export leaves nothing half-written, and
export.json (written last) holds the sha256 of every other file, config.yaml included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from cora_kit import __version__
from cora_kit.config import CoraConfig, to_yaml
from cora_kit.errors import ConfigError
from cora_kit.fs import atomic_dir, sha256_file
from cora_kit.interfaces import LLMAdapter, VisionEncoder
from cora_kit.pipeline import CoraModel
from cora_kit.serving.export_format import FORMAT, FORMAT_VERSION, META, MODULE_FILES, folder_files
from cora_kit.serving.loading import load_run

# --- export -------------------------------------------------------------------------


_CORE_OPTIONS = ("random_init", "pretrained", "arch", "tokenizer")
#: ``export --dtype`` -> weight dtype of the files
EXPORT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _point_config_at(section: dict[str, Any], folder: str) -> None:
    """``model.encoder`` / ``model.llm`` of the exported config: load from ``folder``."""
    section.update(pretrained=folder, arch={})
    if "tokenizer" in section:
        section["tokenizer"] = None
    section["options"] = {k: v for k, v in section["options"].items() if k not in _CORE_OPTIONS}


def _save_encoder(encoder: VisionEncoder, out: Path, cfg: dict[str, Any], dtype: torch.dtype) -> list[str]:
    """``encoder/`` in the encoder's own format, or ``encoder.safetensors`` (its state dict,
    rebuilt from the same config) when it has none; weights cast to ``dtype`` first."""
    encoder.to(dtype)
    (out / "encoder").mkdir()
    files = encoder.save_pretrained(out / "encoder")
    if files is None:
        (out / "encoder").rmdir()
        save_model(encoder, str(out / "encoder.safetensors"))
        return ["encoder.safetensors"]
    _point_config_at(cfg["model"]["encoder"], "encoder")
    return [f"encoder/{f}" for f in files]


def _save_llm(llm: LLMAdapter, out: Path, cfg: dict[str, Any], dtype: torch.dtype) -> list[str]:
    """``llm/``: the LM with LoRA merged into its weights (in fp32, then cast to ``dtype``:
    every weight rounded once), and its tokenizer."""
    llm.merge_lora()
    llm.to(dtype)
    (out / "llm").mkdir()
    files = llm.save_pretrained(out / "llm")
    _point_config_at(cfg["model"]["llm"], "llm")
    return [f"llm/{f}" for f in files]


def export_model(model: CoraModel, out_dir: str | Path, source: dict[str, Any], overwrite: bool = False,
                 dtype: str = "fp32") -> Path:
    """Write ``model`` (a loaded ``CoraModel``) as a self-contained folder ``out_dir``.

    The LLM is merged in place (the adapter is gone from ``model`` afterwards). ``dtype``
    ``bf16`` writes every weight in bfloat16 (half the size; LoRA is merged in fp32 first,
    so each weight is rounded once) and casts ``model`` in place; loading upcasts to fp32
    master weights, and captioning runs under bf16 autocast on CUDA either way.
    ``source`` is recorded in export.json (run folder, stage files).
    """
    if dtype not in EXPORT_DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(EXPORT_DTYPES)}")
    torch_dtype = EXPORT_DTYPES[dtype]
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite")
    with atomic_dir(out_dir) as tmp:
        cfg = model.config.model_dump(mode="json")
        plugins = model.plugin_metadata()
        _save_encoder(model.encoder, tmp, cfg, torch_dtype)
        _save_llm(model.llm, tmp, cfg, torch_dtype)
        for attr, name in MODULE_FILES.items():
            module = getattr(model, attr)
            if isinstance(module, nn.Module) and module.state_dict():
                save_model(module.to(torch_dtype), str(tmp / name))
        config = CoraConfig.model_validate(cfg)
        (tmp / "config.yaml").write_text(
            "# exported by cora-kit; model.encoder.pretrained / model.llm.pretrained are relative to this folder\n"
            + to_yaml(config), encoding="utf-8")
        (tmp / "plugins.json").write_text(json.dumps(plugins, indent=2, default=str) + "\n", encoding="utf-8")
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cora_kit_version": __version__,
            "source": source, "lora_merged": True, "dtype": dtype,
            "files": {f: sha256_file(tmp / f) for f in folder_files(tmp)},
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path, sources: tuple[str | Path, ...] = (),
               overwrite: bool = False, dtype: str = "fp32", trust_remote_code: bool = False) -> Path:
    """Load a run folder (``cora_kit.serving.loading.load_run``: every weight file checked
    against its sha256) and export it to ``out_dir`` with weights in ``dtype`` (``fp32`` or
    ``bf16``)."""
    model, info = load_run(run_dir, device="cpu", sources=sources, trust_remote_code=trust_remote_code)
    source = {"run": str(Path(run_dir).resolve()), "stages": {str(k): v for k, v in info.stages.items()},
              "notes": info.notes}
    return export_model(model, out_dir, source, overwrite=overwrite, dtype=dtype)


__all__ = ["EXPORT_DTYPES", "export_model", "export_run"]
