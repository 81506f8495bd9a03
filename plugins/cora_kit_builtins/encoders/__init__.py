"""Built-in encoders (registered through the `cora_kit` entry point `encoders`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_encoders(register: RegisterCallback) -> None:
    """Register the built-in encoders."""
