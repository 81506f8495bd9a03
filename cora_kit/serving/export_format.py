"""The exported model folder's format (written by ``serving.export``, read by ``serving.loading``).

Layout (every weight file is safetensors; pickles are refused on load)::

    config.yaml          resolved config; encoder/LLM ``pretrained`` are folder-relative
    plugins.json         plugin names, versions, backends of the exported model
    export.json          format marker, source run, stages, sha256 of EVERY other file
    encoder/             the encoder's own pretrained format (``VisionEncoder.save_pretrained``), or
    encoder.safetensors  its state dict when the encoder plugin has no such format
    llm/                 LLM with LoRA merged + tokenizer (``LLMAdapter.save_pretrained``)
    resampler.safetensors  projector.safetensors  overlap_head.safetensors  [loss.safetensors]

A folder is code-free data. Loading checks every file against export.json (a file added,
changed or missing is a ``CheckpointError`` naming it), reads no ``trust_remote_code``
from it (only the caller decides: ``cora-kit caption --trust-remote-code``), and resolves
every ``pretrained`` / ``tokenizer`` path inside the folder (one pointing outside is a
``ConfigError``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cora_kit.config import CoraConfig, read_config_file
from cora_kit.errors import CheckpointError, ConfigError
from cora_kit.fs import sha256_file

FORMAT = "cora-kit-export"
FORMAT_VERSION = 2  # v2: every file hashed (v1: weight files only)
META = "export.json"
#: config keys naming files a folder's model is built from (checked to stay inside it)
PATH_KEYS = ("pretrained", "tokenizer")
#: values of those keys that name no file (the packaged tiny tokenizer)
PACKAGED = ("cora-kit-tiny",)
#: core modules saved as safetensors state dicts (attribute of CoraModel -> file)
MODULE_FILES = {
    "resampler": "resampler.safetensors",
    "projector": "projector.safetensors",
    "overlap_head": "overlap_head.safetensors",
    "loss_fn": "loss.safetensors",
}
#: suffixes of pickle-based weight formats (arbitrary code on load): never read
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


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
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a cora-kit export (no export.json); create one with `cora-kit export`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        got = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else (None, None)
        raise CheckpointError(
            f"{path}: format {got[0]!r} v{got[1]!r}; expected {FORMAT!r} v{FORMAT_VERSION}"
            " (re-export the run with this cora-kit: `cora-kit export --run RUN --out DIR`)"
        )
    if not isinstance(meta.get("files"), dict) or not meta["files"]:
        raise CheckpointError(f"{path}: no 'files' with their sha256")
    return meta


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder`` but export.json, as sorted POSIX relative paths."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if (p.is_file() or p.is_symlink())
                  and p.relative_to(folder).as_posix() != META)


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every file of ``folder`` is listed in export.json with its sha256, and matches it;
    nothing listed is missing and no file resolves outside the folder."""
    folder = Path(folder)
    root = folder.resolve()
    listed = meta.get("files", {})
    for name in folder_files(folder):
        if name not in listed:
            raise CheckpointError(
                f"{folder / name}: not listed in export.json; an export holds only the files it was written with"
                " (delete the file or re-export)"
            )
    for name, digest in listed.items():
        path = folder / name
        if not path.resolve().is_relative_to(root):
            raise CheckpointError(f"{path}: resolves outside the model folder ({path.resolve()})")
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in export.json but missing")
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path}: sha256 differs from export.json (modified, truncated or corrupted); re-export the run"
            )


def _confine(folder: Path, key: str, value: Any) -> Any:
    """``value`` of a path key of the folder's config, made absolute inside ``folder``."""
    if not isinstance(value, str) or value in PACKAGED:
        return value
    root = folder.resolve()
    target = (folder / value).resolve()
    if not target.is_relative_to(root):
        raise ConfigError(
            f"{folder / 'config.yaml'}: {key} '{value}' points outside the model folder ({target});"
            " an exported model loads files from its own folder only"
        )
    return str(target)


def export_config(folder: Path, trust_remote_code: bool = False) -> tuple[CoraConfig, list[str]]:
    """(config, notes) of an exported folder: encoder/LLM paths made absolute and confined to
    ``folder``; every ``trust_remote_code`` in it replaced by the caller's ``trust_remote_code``
    (a folder never grants itself code execution; a note says when it asked to)."""
    folder = Path(folder)
    config = read_config_file(folder / "config.yaml")
    data = config.model_dump(mode="json")
    notes = apply_trust_remote_code(data, trust_remote_code, folder / "config.yaml")
    for part in ("encoder", "llm"):
        section = data["model"][part]
        for scope, where in ((section, f"model.{part}"), (section.get("options", {}), f"model.{part}.options")):
            for key in PATH_KEYS:
                if scope.get(key) is not None:
                    scope[key] = _confine(folder, f"{where}.{key}", scope[key])
    return CoraConfig.model_validate(data), notes


def apply_trust_remote_code(data: dict[str, Any], allowed: bool, source: Path) -> list[str]:
    """Set every ``trust_remote_code`` of a config dict's model section (each component and
    its plugin options) to ``allowed``; returns notes naming the keys that asked otherwise."""
    notes: list[str] = []

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "trust_remote_code":
                if bool(value) and not allowed:
                    notes.append(
                        f"{source}: {where}{key} is true; ignored (a model folder cannot allow its own code;"
                        " pass --trust-remote-code if you trust it)"
                    )
                node[key] = allowed
            else:
                walk(value, f"{where}{key}.")

    walk(data.get("model", {}), "model.")
    return notes


def summarize(folder: Path) -> dict[str, int]:
    """Weight files of an export and their sizes in bytes (for the CLI)."""
    meta = read_export_meta(folder)
    return {name: (Path(folder) / name).stat().st_size for name in meta["files"] if name.endswith(".safetensors")}


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODULE_FILES",
    "PICKLE_SUFFIXES",
    "apply_trust_remote_code",
    "export_config",
    "find_pickles",
    "folder_files",
    "read_export_meta",
    "refuse_pickles",
    "sha256_file",
    "summarize",
    "verify_files",
]
