"""Built-in losses (registered through the `cora_kit` entry point `losses`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_losses(register: RegisterCallback) -> None:
    """Register the built-in losses."""
