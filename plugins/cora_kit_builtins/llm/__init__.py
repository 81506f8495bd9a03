"""Built-in llm (registered through the `cora_kit` entry point `llm`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_llm_adapters(register: RegisterCallback) -> None:
    """Register the built-in llm."""
