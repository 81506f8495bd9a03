"""The one device resolver: ``--device`` / ``config.device`` text -> ``torch.device``.

Used by training (``cora_kit.train``, one process or torchrun/DDP) and serving (caption,
export loading), so ``cuda`` means the same everywhere:

* ``auto``: ``cuda`` when a GPU is visible, else ``cpu``;
* ``cuda`` / ``cuda:N`` without a visible GPU (or with N out of range) is a ``ConfigError``,
  never a silent CPU run;
* under DDP (``local_rank`` given), ``auto`` and ``cuda`` become ``cuda:<local_rank>``;
* any other name torch knows (``cpu``, ``meta``, ``mps``) is passed through; an unknown one
  is a ``ConfigError``.
"""

from __future__ import annotations

import contextlib

import torch

from cora_kit.errors import ConfigError


def resolve_device(name: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``name`` -> ``torch.device`` (rules in the module docstring)."""
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{name}' is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{name}': no CUDA device is available (use --device cpu or auto)")
    if device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device '{device}': only {count} CUDA device(s) are visible")
    return device


PRECISIONS = ("auto", "fp32", "bf16")


def autocast(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The one precision rule of training, evaluation and captioning (``config.precision``):
    ``auto`` is bf16 autocast on CUDA and fp32 elsewhere, ``bf16`` is bf16 autocast on any
    device (CPU included: slow, but the same code path), ``fp32`` is no autocast. Weights
    stay fp32 under autocast; matmuls run in bf16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}': use one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if precision == "bf16" or (precision == "auto" and device_type == "cuda"):
        if device_type not in ("cuda", "cpu"):
            raise ConfigError(f"precision '{precision}': bf16 autocast runs on cuda or cpu, not {device_type}")
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["PRECISIONS", "autocast", "resolve_device"]
