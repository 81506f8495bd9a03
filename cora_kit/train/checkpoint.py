"""Checkpoints: trainable weights as safetensors, resume state as a weights-only torch file.

Layout of one stage folder (``runs/<name>/stage<k>/``)::

    last.safetensors   trainable weights at the last checkpointed optimizer step
    last.state.pt      optimizer, scheduler, RNG states, data position (same step)
    model.safetensors  trainable weights at the end of the stage (written once, when done)
    done.json          {"stage", "steps", "metrics"}: the stage finished

and, in the run folder, ``weights_fingerprint.txt``: the hash of the freshly built model's
weights, checked whenever the run is rebuilt from ``config.yaml`` (resume, caption, export).

Every file is written to a temporary name in the same folder and renamed, so a crash or
Ctrl-C never leaves half a file under a real name. Resume state is loaded with
``torch.load(weights_only=True)``: pickles of arbitrary objects are refused.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cora_kit.errors import CheckpointError

WEIGHTS_LAST = "last.safetensors"
STATE_LAST = "last.state.pt"
WEIGHTS_FINAL = "model.safetensors"
DONE = "done.json"
WEIGHTS_FINGERPRINT = "weights_fingerprint.txt"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Trainable weights -> safetensors (contiguous CPU copies), atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {str(k): str(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint; a missing, truncated or corrupt file is a
    ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({exc}); delete it or restart the stage"
        ) from None


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors file (``CheckpointError`` if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from None


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
    atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_resume_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"resume state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe content, RuntimeError if truncated
        raise CheckpointError(
            f"resume state {path} cannot be loaded safely ({type(exc).__name__}: {exc})"
        ) from None


def save_checkpoint(stage_dir: Path, weights: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
    """Write ``last.safetensors`` then ``last.state.pt``; both carry the step, so a crash
    between the two writes is detected on resume."""
    step = int(state["step"])
    save_weights(stage_dir / WEIGHTS_LAST, weights, {"step": str(step), "kind": "cora-kit checkpoint"})
    save_resume_state(stage_dir / STATE_LAST, state)


def load_checkpoint(stage_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, resume state) of a stage folder; their steps must agree."""
    weights_path = stage_dir / WEIGHTS_LAST
    state = load_resume_state(stage_dir / STATE_LAST)
    weights = load_weights(weights_path)
    meta_step = weights_metadata(weights_path).get("step")
    if meta_step is None or int(meta_step) != int(state["step"]):
        raise CheckpointError(
            f"{weights_path} is at step {meta_step} but {stage_dir / STATE_LAST} is at step"
            f" {state['step']}; the checkpoint is inconsistent (interrupted write?)"
        )
    return weights, state


def has_checkpoint(stage_dir: Path) -> bool:
    return (stage_dir / WEIGHTS_LAST).is_file() and (stage_dir / STATE_LAST).is_file()


def mark_done(stage_dir: Path, weights: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Final weights then ``done.json`` (the marker is written last)."""
    save_weights(stage_dir / WEIGHTS_FINAL, weights, {"stage": str(info.get("stage")), "kind": "cora-kit final"})
    write_text_atomic(stage_dir / DONE, json.dumps(dict(info), indent=2, sort_keys=True) + "\n")


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE).is_file() and (stage_dir / WEIGHTS_FINAL).is_file()


def load_final(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(stage_dir / WEIGHTS_FINAL)


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
    "WEIGHTS_FINGERPRINT",
    "atomic_write",
    "check_or_write_fingerprint",
    "has_checkpoint",
    "is_done",
    "load_checkpoint",
    "load_final",
    "load_resume_state",
    "load_weights",
    "mark_done",
    "rng_state",
    "save_checkpoint",
    "save_resume_state",
    "save_weights",
    "set_rng_state",
    "write_text_atomic",
]
