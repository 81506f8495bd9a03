"""Built-in tilers (registered through the `cora_kit` entry point `tilers`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_tilers(register: RegisterCallback) -> None:
    """Register the built-in tilers."""
