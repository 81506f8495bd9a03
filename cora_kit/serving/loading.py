"""Load a trained model: a run folder (``cora-kit run``) or an exported folder (``cora-kit export``).

    model, info = load_model(run="runs/NAME")          # config.yaml + stage weights
    model, info = load_model(model_dir="exported/")    # cora-kit export output

A run folder holds the trainable weights only; the frozen ones are rebuilt from
``config.yaml``: the tiny preset's are a seeded random init (``CoraModel.from_config``
seeds each component with ``config.seed``), the paper preset's come from the pretrained
files, and ``weights_fingerprint.txt`` proves the rebuild starts from the same weights.
An exported folder is rebuilt from its own config (no hub, no run folder); its files are
safetensors only and their hashes are checked against export.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors
import torch
from torch import nn

from cora_kit.config import CoraConfig, read_config_file
from cora_kit.device import resolve_device
from cora_kit.errors import CheckpointError, ConfigError
from cora_kit.pipeline import CoraModel
from cora_kit.serving.export_format import (
    MODULE_FILES,
    apply_trust_remote_code,
    export_config,
    read_export_meta,
    refuse_pickles,
    verify_files,
)
from cora_kit.train import checkpoint as ckpt

STAGES = (1, 2, 3)


@dataclass
class LoadInfo:
    """Where the weights of a loaded model came from (printed by the CLI)."""

    source: str
    kind: str  # "run" or "export"
    stages: dict[int, str] = field(default_factory=dict)  # stage -> weights file
    notes: list[str] = field(default_factory=list)


# --- run folders ----------------------------------------------------------------------


def _stage_weights(root: Path, k: int) -> tuple[Path, str] | None:
    """(weights, note) of stage ``k`` in ``root``: the final weights file, else the newest
    complete checkpoint folder of an unfinished stage; None when the stage never ran there."""
    d = root / f"stage{k}"
    if ckpt.is_done(d):
        return ckpt.final_weights_path(d), ""
    ref = ckpt.find_checkpoint(d)
    if ref is not None:
        return ref.path, f"stage {k} is unfinished: using its checkpoint at step {ref.step}"
    return None


def run_stage_files(run_dir: Path, sources: Sequence[Path] = ()) -> tuple[dict[int, Path], list[str]]:
    """Weights file of every stage up to the latest one found in ``run_dir``.

    Each stage's checkpoint holds only what trained in it, so the model is stage 1, then
    2, then 3 applied in order. A stage before the latest one is looked up in ``run_dir``
    then in ``sources`` (runs trained with ``--from``); missing -> ``CheckpointError``.
    """
    run_dir = Path(run_dir)
    found = {k: _stage_weights(run_dir, k) for k in STAGES}
    latest = max((k for k, v in found.items() if v is not None), default=None)
    if latest is None:
        raise CheckpointError(f"{run_dir}: no stage1/, stage2/ or stage3/ weights; is it a run folder?")
    if latest < 2:
        raise CheckpointError(
            f"{run_dir}: only stage 1 has weights; captioning needs the projector and LLM of stage 2 or 3"
        )
    files: dict[int, Path] = {}
    notes: list[str] = []
    for k in range(1, latest + 1):
        hit = found[k]
        if hit is not None and hit[1] and k < latest:
            raise CheckpointError(f"{run_dir}: stage {k} is unfinished but stage {latest} has weights")
        for src in sources:
            if hit is not None:
                break
            got = _stage_weights(Path(src), k)
            hit = got if got is not None and not got[1] else None
        if hit is None:
            where = " or ".join(str(p) for p in [run_dir, *sources])
            raise CheckpointError(
                f"stage {k}'s weights are in neither {where} (the run started from another run?"
                " pass that run folder with --from)"
            )
        files[k] = hit[0]
        if hit[1]:
            notes.append(hit[1])
    return files, notes


def load_run(
    run_dir: str | Path, device: str = "auto", sources: Sequence[str | Path] = (), trust_remote_code: bool = False
) -> tuple[CoraModel, LoadInfo]:
    """``CoraModel`` of a run folder: rebuilt from ``config.yaml`` (seeded), then every
    stage's trainable weights loaded in order (strict: names and shapes must match), each
    file checked against its recorded sha256. ``trust_remote_code`` comes from the caller
    only, never from the folder's config.yaml."""
    target = resolve_device(device)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--run {run_dir}: no config.yaml; is it a run folder (cora-kit run writes runs/NAME/config.yaml)?")
    data = read_config_file(run_dir / "config.yaml").model_dump(mode="json")
    notes = apply_trust_remote_code(data, trust_remote_code, run_dir / "config.yaml")
    config = CoraConfig.model_validate(data)
    files, stage_notes = run_stage_files(run_dir, [Path(s) for s in sources])
    notes += stage_notes
    model = CoraModel.from_config(config, device=target)
    ckpt.check_or_write_fingerprint(run_dir / ckpt.WEIGHTS_FINGERPRINT, model.weights_fingerprint(), writer=False)
    for path in files.values():  # each stage folder's weights, checked against their sha256
        model.load_trainable_state_dict(ckpt.load_stage_weights(path.parent)[0], strict=True)
    model.eval()
    return model, LoadInfo(str(run_dir), "run", {k: str(p) for k, p in files.items()}, notes)


# --- exported folders -----------------------------------------------------------------


def _load_module(module: nn.Module, path: Path) -> None:
    try:
        missing, unexpected = load_safetensors(module, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot load ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from config.yaml:"
            f" missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )


def load_export(folder: str | Path, device: str = "auto", trust_remote_code: bool = False) -> tuple[CoraModel, LoadInfo]:
    """``(CoraModel, LoadInfo)`` of an exported folder: safetensors only, strict names,
    every file checked against export.json, paths confined to the folder, and
    ``trust_remote_code`` from the caller only (``cora_kit.serving.export_format``)."""
    target = resolve_device(device)
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--model {folder}: no such folder")
    refuse_pickles(folder)
    meta = read_export_meta(folder)
    verify_files(folder, meta)
    config, notes = export_config(folder, trust_remote_code)
    model = CoraModel.from_config(config, device="cpu")
    # the exported LLM has its LoRA merged; the freshly added adapter is zero: skip it
    if model.llm.lora_is_zero():
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
    for p in model.parameters():  # fp32 master weights, whatever dtype the files hold
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
    model = model.to(target)
    model.eval()
    notes = [f"exported from {meta.get('source', {}).get('run', '?')}", *notes]
    if meta.get("dtype", "fp32") != "fp32":
        notes.append(f"weights stored in {meta['dtype']}, loaded as fp32 (bf16 autocast on CUDA)")
    return model, LoadInfo(str(folder), "export", {}, notes)


def load_model(
    run: str | Path | None = None, model_dir: str | Path | None = None, device: str = "auto",
    sources: Sequence[str | Path] = (), trust_remote_code: bool = False,
) -> tuple[CoraModel, LoadInfo]:
    """Exactly one of ``run`` (a run folder) or ``model_dir`` (an exported folder).
    ``trust_remote_code`` lets transformers run Python files of the model folder: only
    for folders the caller trusts (the folder's own config never enables it)."""
    if (run is None) == (model_dir is None):
        raise ConfigError("give exactly one of --run RUN_DIR or --model EXPORTED_DIR")
    if run is not None:
        return load_run(run, device, sources, trust_remote_code)
    return load_export(Path(model_dir), device, trust_remote_code)  # type: ignore[arg-type]


__all__ = ["LoadInfo", "load_export", "load_model", "load_run", "run_stage_files"]
