"""Built-in stitchers (registered through the `cora_kit` entry point `stitchers`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_stitchers(register: RegisterCallback) -> None:
    """Register the built-in stitchers."""
