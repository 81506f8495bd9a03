"""cora-kit: plugin-registry toolkit for CORA-family 360-degree panorama VLMs.

Public API::

    cora_kit.list_plugins(kind=None) -> list[PluginInfo]
    cora_kit.create(kind, name, **params)
    cora_kit.Captioner.from_run(path) / .from_export(path) -> .caption(images, queries)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cora_kit.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    CoraKitError,
    DataError,
    MissingWeightsError,
    PluginConflictError,
    PluginParamsError,
    UnknownPluginError,
)
from cora_kit.hookspecs import KINDS, PROJECT_NAME, hookimpl, hookspec
from cora_kit.registry import REGISTRY, PluginInfo

try:
    __version__ = version("cora-kit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    """``cora_kit.Captioner`` (and ``CaptionResult``), imported on first use (PEP 562): the
    serving layer sits above this package's own modules and loads torch models."""
    if name in ("Captioner", "CaptionResult"):
        from cora_kit.serving import captioner

        return getattr(captioner, name)
    raise AttributeError(f"module 'cora_kit' has no attribute {name!r}")


def list_plugins(kind: str | None = None, pattern: str | None = None) -> list[PluginInfo]:
    """Every registered plugin (of one kind), sorted by kind then name.

    With ``kind=None`` distributions that failed to load are listed too (status "error").
    """
    return REGISTRY.list_plugins(kind, pattern)


def create(kind: str, name: str, **params: Any) -> Any:
    """Build plugin ``name`` of ``kind`` (tiler, encoder, resampler, loss, stitcher, llm,
    metric) with ``params`` validated by its pydantic model; ``dist:name`` picks a
    distribution when two register one name."""
    return REGISTRY.create(kind, name, **params)


__all__ = [
    "KINDS",
    "PROJECT_NAME",
    "BackendUnavailableError",
    "CaptionResult",
    "Captioner",
    "CheckpointError",
    "ConfigError",
    "CoraKitError",
    "DataError",
    "MissingWeightsError",
    "PluginConflictError",
    "PluginInfo",
    "PluginParamsError",
    "UnknownPluginError",
    "__version__",
    "create",
    "hookimpl",
    "hookspec",
    "list_plugins",
]
