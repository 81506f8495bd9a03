"""The machinery of the conformance checks: results, the plugin under test, the check registry.

A check is a function ``check_<property>(subject) -> note | None`` that raises
``CheckFailure`` (expected / got / fix) or ``CheckSkipped``; ``@check("resampler")``
registers it for one kind. Checks that several kinds share are written once against a
per-kind driver and registered per kind with ``functools.partial`` (``checks_modules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from cora_kit import interfaces as I
from cora_kit.hookspecs import KINDS
from cora_kit.registry import PluginSpec

GRID: I.Grid = (16, 16)  # the seed's token grid per view
#: plugin kind -> the interface its plugins subclass
INTERFACE: dict[str, type] = {
    "tiler": I.Tiler,
    "encoder": I.VisionEncoder,
    "resampler": I.Resampler,
    "loss": I.OverlapLoss,
    "stitcher": I.Stitcher,
    "llm": I.LLMAdapter,
    "metric": I.Metric,
}


class CheckFailure(AssertionError):
    """A plugin broke its contract; the message says expected / got / fix."""


class CheckSkipped(Exception):
    """A check does not apply (missing CUDA, metric unavailable, property not declared)."""


@dataclass
class CheckResult:
    """Outcome of one check on one plugin. ``status``: passed, failed, skipped, xfailed."""

    kind: str
    plugin: str
    check: str
    status: str
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class Subject:
    """The plugin under test: its spec, the small params it is built with, and a cache
    that the checks of one plugin share (an expensive instance, scores)."""

    kind: str
    spec: PluginSpec
    params: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.spec.name}'"

    def make(self, seed: int = 0) -> Any:
        """A fresh instance, built after ``torch.manual_seed(seed)``; modules in eval mode."""
        torch.manual_seed(seed)
        obj = self.spec.factory(**self.spec.validate_params(dict(self.params)))
        if isinstance(obj, torch.nn.Module):
            obj.eval()
        return obj

    def shared(self, key: str = "instance") -> Any:
        """One instance built once for the checks that do not mutate it."""
        if key not in self.cache:
            self.cache[key] = self.make()
        return self.cache[key]


CheckFn = Callable[[Subject], "str | None"]


@dataclass(frozen=True)
class Check:
    """One named check of one plugin kind; ``doc`` is the first line of its docstring."""

    name: str
    kind: str
    func: CheckFn
    doc: str

    @property
    def kinds(self) -> tuple[str, ...]:
        """Deprecated (before 0.2 a check listed several kinds): ``(kind,)``."""
        return (self.kind,)


CHECKS: list[Check] = []


def check(*kinds: str, name: str | None = None) -> Callable[[CheckFn], CheckFn]:
    """Register ``func`` as a check of each of ``kinds`` (name: the function's name)."""

    def deco(func: CheckFn) -> CheckFn:
        register(func, kinds, name)
        return func

    return deco


def register(func: Callable[..., Any], kinds: tuple[str, ...] | list[str], name: str | None = None) -> None:
    """Add ``func`` (a function or a ``functools.partial``) as a check of ``kinds``."""
    base = getattr(func, "func", func)
    label = name or base.__name__
    doc = (base.__doc__ or "").strip().splitlines()
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
        CHECKS.append(Check(label, kind, func, doc[0] if doc else ""))


def checks_for(kind: str) -> list[Check]:
    """The checks that apply to ``kind``, in a stable order."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    return [c for c in CHECKS if c.kind == kind]


def small_params(spec: PluginSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Params for a fast check run: small resampler dims (``in_dim``/``out_dim`` 32/48,
    ``hidden_dim`` 64), then ``testing_params`` of the params model, then ``overrides``."""
    params: dict[str, Any] = {}
    model = spec.params_model
    fields = model.model_fields if model is not None else {}
    if spec.kind == "resampler" and {"in_dim", "out_dim"} <= set(fields):
        same = fields["in_dim"].default == fields["out_dim"].default
        params.update(in_dim=32, out_dim=32 if same else 48)
        if "hidden_dim" in fields:
            params["hidden_dim"] = 64
    elif spec.kind == "resampler" and "in_dim" in fields:  # keeps its width (identity)
        params.update(in_dim=32)
    params.update(dict(getattr(model, "testing_params", None) or {}))
    params.update(dict(overrides or {}))
    return params


# --- assertions shared by the checks ----------------------------------------------------


def shape(t: Any) -> list[int] | str:
    """``list(t.shape)`` for a tensor, else the type name (for messages)."""
    return list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailure(message)


def finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach().float()).all())


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> tuple[bool, float]:
    diff = float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0
    return bool(torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)), diff


def randn(*dims: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*dims, generator=torch.Generator().manual_seed(seed))


def save_load_safetensors(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Write ``src``'s state with safetensors and load it into ``dst``; returns #tensors."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_model, save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        save_model(src, str(path))
        missing, unexpected = load_model(dst, str(path), strict=True)
        expect(not missing and not unexpected, f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    return len(src.state_dict())


__all__ = [
    "CHECKS",
    "GRID",
    "INTERFACE",
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Subject",
    "check",
    "checks_for",
    "register",
    "small_params",
]
