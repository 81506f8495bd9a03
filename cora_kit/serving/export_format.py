"""The exported model folder's format (written by ``serving.export``, read by ``serving.loading``).

Layout (every weight file is safetensors; pickles are refused on load)::

    config.yaml          resolved config; encoder/LLM ``pretrained`` are folder-relative
    plugins.json         plugin names, versions, backends of the exported model
    export.json          format marker, source run, stages, sha256 of every weight file
    encoder/             the encoder's own pretrained format (``VisionEncoder.save_pretrained``), or
    encoder.safetensors  its state dict when the encoder plugin has no such format
    llm/                 LLM with LoRA merged + tokenizer (``LLMAdapter.save_pretrained``)
    resampler.safetensors  projector.safetensors  overlap_head.safetensors  [loss.safetensors]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cora_kit.config import CoraConfig, read_config_file
from cora_kit.errors import CheckpointError

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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
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


def read_export_meta(folder: Path) -> dict[str, Any]:
    """export.json of ``folder`` (``CheckpointError`` if missing, invalid or another format)."""
    path = Path(folder) / "export.json"
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


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every weight file listed in export.json exists and has its recorded sha256."""
    for name, digest in meta.get("files", {}).items():
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in export.json but missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: content differs from export.json (modified or truncated); re-export")


def export_config(folder: Path) -> CoraConfig:
    """The folder's config with encoder/LLM paths made absolute (inside ``folder``)."""
    folder = Path(folder)
    config = read_config_file(folder / "config.yaml")
    data = config.model_dump(mode="json")
    for part in ("encoder", "llm"):
        rel = data["model"][part].get("pretrained")
        if rel is not None and not Path(rel).is_absolute():
            data["model"][part]["pretrained"] = str((folder / rel).resolve())
    return CoraConfig.model_validate(data)


def summarize(folder: Path) -> dict[str, int]:
    """Weight files of an export and their sizes in bytes (for the CLI)."""
    meta = read_export_meta(folder)
    return {name: (Path(folder) / name).stat().st_size for name in meta["files"]}


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODULE_FILES",
    "PICKLE_SUFFIXES",
    "export_config",
    "find_pickles",
    "read_export_meta",
    "refuse_pickles",
    "sha256_file",
    "summarize",
    "verify_files",
]
