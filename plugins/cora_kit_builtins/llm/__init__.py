"""Built-in LLM adapters (registered through the `cora_kit` entry point `llm`).

Modules are imported inside the hook so that listing plugins stays cheap.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_llm_adapters(register: RegisterCallback) -> None:
    """Register the built-in LLM adapters."""
    from cora_kit_builtins.llm import qwen3

    register(
        "qwen3",
        qwen3.Qwen3Adapter,
        params=qwen3.Qwen3Params,
        backend="transformers AutoModelForCausalLM + peft",
        description="Qwen3 causal LM via inputs_embeds, <|vision|> token, peft LoRA; paper: Qwen3-0.6B",
    )
