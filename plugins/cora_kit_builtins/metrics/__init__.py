"""Built-in metrics (registered through the `cora_kit` entry point `metrics`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_metrics(register: RegisterCallback) -> None:
    """Register the built-in metrics."""
