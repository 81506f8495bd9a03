"""Checkpoints: trainable weights as safetensors, resume state as a weights-only torch file,
every file listed with its sha256 in a manifest that is written last.

Layout of one stage folder (``runs/<name>/stage<k>/``)::

    checkpoint-00000010/     one resumable checkpoint, an atomic unit: written as
        weights.safetensors    ``.checkpoint-00000010.tmp-*`` and renamed when complete
        state.pt               optimizer, scheduler, RNG states, data position
        manifest.json          step, sha256 and size of both files (written last)
    model.safetensors        trainable weights at the end of the stage
    done.json                {"stage", "steps", "metrics", ..., "files": {"model.safetensors":
                             {"sha256", "bytes"}}}: the stage finished (written last)

and, in the run folder, ``weights_fingerprint.txt``: the hash of the freshly built model's
weights, checked whenever the run is rebuilt from ``config.yaml`` (resume, caption, export).

A kill at any moment leaves either the whole checkpoint or none of it under a real name
(``find_checkpoint`` picks the newest complete one; hidden ``.tmp`` leftovers are ignored
and removed by the next save). Every read checks the recorded sha256: a file changed
after it was written is a ``CheckpointError`` naming it. Resume state is loaded with
``torch.load(weights_only=True)``: pickles of arbitrary objects are refused. Folders of
cora-kit 0.1.0 (``last.safetensors`` + ``last.state.pt``, no hashes) still load, with a
warning that nothing could be verified.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from cora_kit.errors import CheckpointError
from cora_kit.fs import atomic_dir, atomic_write, atomic_write_bytes, sha256_bytes, write_file, write_text_atomic

CHECKPOINT_PREFIX = "checkpoint-"
WEIGHTS = "weights.safetensors"
STATE = "state.pt"
MANIFEST = "manifest.json"
WEIGHTS_FINAL = "model.safetensors"
DONE = "done.json"
WEIGHTS_FINGERPRINT = "weights_fingerprint.txt"
#: the cora-kit 0.1.0 layout (read only)
LEGACY_WEIGHTS = "last.safetensors"
LEGACY_STATE = "last.state.pt"

_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


@dataclass(frozen=True)
class CheckpointRef:
    """One complete checkpoint: its folder, its step, and whether it predates hashes."""

    path: Path
    step: int
    legacy: bool = False

    def __str__(self) -> str:
        return f"{self.path} (step {self.step})"


# --- verified files ---------------------------------------------------------------------


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": sha256_bytes(data), "bytes": len(data)}


def read_verified(path: Path, entry: Mapping[str, Any] | None, manifest: Path) -> bytes:
    """Bytes of ``path``, checked against its manifest ``entry`` (``{"sha256", "bytes"}``);
    ``entry`` None reads unchecked (legacy files). ``CheckpointError`` names the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (listed in {manifest})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if entry is not None and (len(data) != int(entry.get("bytes", -1)) or sha256_bytes(data) != entry.get("sha256")):
        raise CheckpointError(
            f"{path}: sha256 differs from the one recorded in {manifest} (the file was modified, truncated or"
            " corrupted after it was written); restore it or delete it to retrain that part"
        )
    return data


def _weights_from_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc}); delete it or restart the stage") from None


def _state_from_bytes(data: bytes, path: Path) -> dict[str, Any]:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe content, RuntimeError if truncated
        raise CheckpointError(f"resume state {path} cannot be loaded safely ({type(exc).__name__}: {exc})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _weights_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return save_safetensors_bytes(tensors, metadata={str(k): str(v) for k, v in metadata.items()})


def _state_bytes(state: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, Any]:
    """Trainable weights -> safetensors (contiguous CPU copies), atomically; returns the
    manifest entry ``{"sha256", "bytes"}``."""
    data = _weights_bytes(state, metadata)
    atomic_write_bytes(path, data)
    return _entry(data)


def load_weights(path: Path, entry: Mapping[str, Any] | None = None, manifest: Path | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (checked against ``entry`` when given); a missing, truncated,
    corrupt or modified file is a ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = read_verified(path, entry, manifest or path)
    return _weights_from_bytes(data, path)


# --- RNG states (only tensors and plain values, so weights_only loading works) ----------


def rng_state() -> dict[str, Any]:
    """torch (CPU + CUDA), numpy and python RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python_version": int(py_state[0]),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": py_state[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), int(has_gauss), float(gauss)))
    py = tuple(int(x) for x in state["python_state"].tolist())
    random.setstate((int(state["python_version"]), py, state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- resume state -----------------------------------------------------------------------


def save_resume_state(path: Path, state: Mapping[str, Any]) -> None:
    """Optimizer/scheduler/RNG/data position -> ``torch.save``, atomically.

    Only tensors, numbers, strings, lists and dicts may be inside (checked on load)."""
    atomic_write_bytes(path, _state_bytes(state))


def load_resume_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"resume state not found: {path}")
    return _state_from_bytes(read_verified(path, None, path), path)


# --- resumable checkpoints --------------------------------------------------------------


def checkpoint_dir(stage_dir: Path, step: int) -> Path:
    return Path(stage_dir) / f"{CHECKPOINT_PREFIX}{int(step):08d}"


def _complete(stage_dir: Path) -> list[CheckpointRef]:
    """Complete checkpoints of ``stage_dir``, newest first (legacy pair last)."""
    stage_dir = Path(stage_dir)
    found: list[CheckpointRef] = []
    if stage_dir.is_dir():
        for d in stage_dir.iterdir():
            m = _CHECKPOINT_RE.match(d.name)
            if m and d.is_dir() and (d / MANIFEST).is_file():
                found.append(CheckpointRef(d, int(m.group(1))))
    found.sort(key=lambda r: r.step, reverse=True)
    if (stage_dir / LEGACY_WEIGHTS).is_file() and (stage_dir / LEGACY_STATE).is_file():
        try:
            step = weights_metadata(stage_dir / LEGACY_WEIGHTS).get("step", "-1")
        except CheckpointError:
            step = "-1"  # reported when it is loaded
        found.append(CheckpointRef(stage_dir, int(step) if str(step).lstrip("-").isdigit() else -1, legacy=True))
    return found


def find_checkpoint(stage_dir: Path) -> CheckpointRef | None:
    """The newest complete checkpoint of a stage folder, or None."""
    found = _complete(stage_dir)
    return found[0] if found else None


def has_checkpoint(stage_dir: Path) -> bool:
    return find_checkpoint(stage_dir) is not None


def incomplete_checkpoints(stage_dir: Path) -> list[Path]:
    """What interrupted saves left in ``stage_dir`` (hidden temp files and folders)."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    return sorted(p for p in stage_dir.iterdir() if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name))


def discard_incomplete(stage_dir: Path) -> list[Path]:
    """Remove what interrupted saves left behind; returns the removed paths."""
    removed = incomplete_checkpoints(stage_dir)
    for p in removed:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


def _prune(stage_dir: Path, keep: Sequence[Path]) -> None:
    """Remove every checkpoint (and legacy pair) but those in ``keep``, and temp leftovers."""
    for ref in _complete(stage_dir):
        if ref.legacy:
            (ref.path / LEGACY_WEIGHTS).unlink(missing_ok=True)
            (ref.path / LEGACY_STATE).unlink(missing_ok=True)
        elif ref.path not in keep:
            shutil.rmtree(ref.path, ignore_errors=True)
    discard_incomplete(stage_dir)


def _first_non_finite(tensors: Mapping[str, Any], prefix: str = "") -> str | None:
    """Name of the first floating tensor (nested in dicts/lists) holding a NaN or Inf."""
    for key, value in tensors.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return name
        elif isinstance(value, Mapping):
            found = _first_non_finite(value, name + ".")
            if found:
                return found
        elif isinstance(value, (list, tuple)):
            found = _first_non_finite(dict(enumerate(value)), name + ".")
            if found:
                return found
    return None


def save_checkpoint(stage_dir: Path, weights: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> CheckpointRef:
    """Write one checkpoint folder atomically (weights, resume state, then the manifest).
    ``state["step"]`` names it. The previous checkpoint stays until ``confirm`` (the new
    one's weights gave a finite loss); older ones are removed.

    Weights or optimizer state holding NaN/Inf are never saved: ``CheckpointError``."""
    step = int(state["step"])
    bad = _first_non_finite(weights) or _first_non_finite(state.get("optimizer", {}), "optimizer.")
    if bad is not None:
        kept = find_checkpoint(stage_dir)
        raise CheckpointError(
            f"{stage_dir}: not saving step {step}: {bad} holds NaN/Inf (training diverged);"
            f" {f'the last good checkpoint is kept: {kept}' if kept else 'no checkpoint was written yet'}"
        )
    final = checkpoint_dir(stage_dir, step)
    previous = find_checkpoint(stage_dir)
    w = _weights_bytes(weights, {"step": str(step), "kind": "cora-kit checkpoint"})
    s = _state_bytes(state)
    with atomic_dir(final) as tmp:
        files = {WEIGHTS: {"sha256": write_file(tmp / WEIGHTS, w), "bytes": len(w)},
                 STATE: {"sha256": write_file(tmp / STATE, s), "bytes": len(s)}}
        manifest = {"kind": "cora-kit checkpoint", "step": step, "files": files}
        write_file(tmp / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    _prune(stage_dir, keep=[final] + ([previous.path] if previous is not None and not previous.legacy else []))
    return CheckpointRef(final, step)


def confirm(stage_dir: Path, step: int) -> None:
    """The checkpoint of ``step`` proved good (its weights gave a finite loss): remove the
    older ones."""
    _prune(stage_dir, keep=[checkpoint_dir(stage_dir, step)])


def discard(stage_dir: Path, step: int) -> CheckpointRef | None:
    """Remove the checkpoint of ``step`` (its weights gave a NaN/Inf loss); returns the
    newest checkpoint left, if any."""
    shutil.rmtree(checkpoint_dir(stage_dir, step), ignore_errors=True)
    return find_checkpoint(stage_dir)


def load_checkpoint(stage_dir: Path, ref: CheckpointRef | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, resume state) of checkpoint ``ref`` (default: the newest complete one);
    every file is checked against the manifest."""
    ref = ref or find_checkpoint(stage_dir)
    if ref is None:
        raise CheckpointError(f"{stage_dir}: no complete checkpoint to resume from")
    if ref.legacy:
        return _load_legacy(ref.path)
    manifest_path = ref.path / MANIFEST
    manifest = _read_json(manifest_path)
    files = manifest.get("files", {})
    if int(manifest.get("step", -1)) != ref.step or set(files) != {WEIGHTS, STATE}:
        raise CheckpointError(f"{manifest_path}: does not describe {ref.path.name} (step {manifest.get('step')})")
    weights = _weights_from_bytes(read_verified(ref.path / WEIGHTS, files[WEIGHTS], manifest_path), ref.path / WEIGHTS)
    state = _state_from_bytes(read_verified(ref.path / STATE, files[STATE], manifest_path), ref.path / STATE)
    if int(state.get("step", -1)) != ref.step:
        raise CheckpointError(f"{ref.path / STATE}: holds step {state.get('step')}, its folder says {ref.step}")
    return weights, state


def _legacy_warning(what: Path) -> None:
    warnings.warn(
        f"{what}: written by cora-kit 0.1.0 without sha256 hashes; its content cannot be verified",
        RuntimeWarning, stacklevel=3,
    )


def _load_legacy(stage_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    weights_path = stage_dir / LEGACY_WEIGHTS
    _legacy_warning(weights_path)
    state = load_resume_state(stage_dir / LEGACY_STATE)
    weights = load_weights(weights_path)
    meta_step = weights_metadata(weights_path).get("step")
    if meta_step is None or int(meta_step) != int(state["step"]):
        raise CheckpointError(
            f"{weights_path} is at step {meta_step} but {stage_dir / LEGACY_STATE} is at step"
            f" {state['step']}; the checkpoint is inconsistent (interrupted write?)"
        )
    return weights, state


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors file (``CheckpointError`` if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from None


# --- finished stages --------------------------------------------------------------------


def mark_done(stage_dir: Path, weights: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Final weights, then ``done.json`` naming them with their sha256 (the marker is
    written last); then the stage's resumable checkpoints are removed."""
    entry = save_weights(stage_dir / WEIGHTS_FINAL, weights, {"stage": str(info.get("stage")), "kind": "cora-kit final"})
    done = {**dict(info), "files": {WEIGHTS_FINAL: entry}}
    write_text_atomic(stage_dir / DONE, json.dumps(done, indent=2, sort_keys=True) + "\n")
    _prune(stage_dir, keep=[])


def tidy_done(stage_dir: Path) -> None:
    """Remove what a finished stage no longer needs (checkpoints, temp files): what a kill
    between ``done.json`` and the clean-up of ``mark_done`` leaves."""
    if is_done(stage_dir):
        _prune(stage_dir, keep=[])


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE).is_file() and (stage_dir / WEIGHTS_FINAL).is_file()


def final_weights_path(stage_dir: Path) -> Path:
    return Path(stage_dir) / WEIGHTS_FINAL


def load_final(stage_dir: Path) -> dict[str, torch.Tensor]:
    """The final weights of a finished stage, checked against ``done.json``."""
    stage_dir = Path(stage_dir)
    done_path = stage_dir / DONE
    entry = _read_json(done_path).get("files", {}).get(WEIGHTS_FINAL) if done_path.is_file() else None
    if entry is None:
        _legacy_warning(stage_dir / WEIGHTS_FINAL)
    return load_weights(stage_dir / WEIGHTS_FINAL, entry, done_path)


def load_stage_weights(stage_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Weights of a stage for inference: the final ones, else the newest checkpoint's;
    returns (weights, note) where the note says when the stage is unfinished."""
    if is_done(stage_dir):
        return load_final(stage_dir), ""
    ref = find_checkpoint(stage_dir)
    if ref is None:
        raise CheckpointError(f"{stage_dir}: neither final weights nor a checkpoint")
    weights, _ = load_checkpoint(stage_dir, ref)
    return weights, f"stage {Path(stage_dir).name[5:]} is unfinished: using its checkpoint at step {ref.step}"


def check_or_write_fingerprint(path: Path, fingerprint: str, writer: bool = True) -> None:
    """Record the freshly built model's weights ``fingerprint`` at ``path``, or check it
    against the one recorded (resume, ``cora-kit caption --run``): a mismatch means the
    rebuild does not start from the weights this run was trained from."""
    path = Path(path)
    if path.is_file():
        recorded = path.read_text(encoding="utf-8").strip()
        if recorded != fingerprint:
            raise CheckpointError(
                f"{path}: the model rebuilt from config.yaml has other initial weights ({fingerprint}) than "
                f"the run was trained from ({recorded}); a changed transformers/torch version or "
                "pretrained files on disk can do this"
            )
    elif writer:
        write_text_atomic(path, fingerprint + "\n")


__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointRef",
    "WEIGHTS_FINGERPRINT",
    "atomic_write",
    "check_or_write_fingerprint",
    "confirm",
    "discard",
    "discard_incomplete",
    "final_weights_path",
    "find_checkpoint",
    "has_checkpoint",
    "incomplete_checkpoints",
    "is_done",
    "load_checkpoint",
    "load_final",
    "load_resume_state",
    "load_stage_weights",
    "load_weights",
    "mark_done",
    "read_verified",
    "rng_state",
    "save_checkpoint",
    "save_resume_state",
    "save_weights",
    "set_rng_state",
    "tidy_done",
    "write_text_atomic",
]
