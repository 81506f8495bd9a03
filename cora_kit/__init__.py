"""cora-kit: plugin-registry toolkit for CORA-family 360-degree panorama VLMs.

Public API::

    cora_kit.list_plugins(kind=None) -> list[PluginInfo]
    cora_kit.create(kind, name, **params)
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
