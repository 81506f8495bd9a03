"""A third-party LLM adapter written from docs/plugins.md alone: a random-init GPT-2 + peft LoRA.

It is what a plugin package would ship (``tests/test_third_party_llm.py`` registers it for
one test the way an entry point would): the params subclass ``LLMParams`` so the pipeline's
``random_init`` / ``pretrained`` / ``arch`` / ``tokenizer`` / ``trust_remote_code`` validate,
``vision_token_id`` is a property, LoRA goes on GPT-2's ``c_attn`` (a ``Conv1D``), and
``save_pretrained`` writes what ``pretrained=folder`` loads back. The tokenizer is the tiny
one cora-kit ships (docs/plugins.md, "LLM adapters").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from cora_kit import hookimpl
from cora_kit.interfaces import LLMAdapter, LLMParams, hf_gradient_checkpointing


class Gpt2Params(LLMParams):
    """Random-init GPT-2 (``arch``: GPT2Config fields) or a folder written by save_pretrained."""

    testing_params: ClassVar[dict[str, Any]] = {"random_init": True, "arch": {"n_embd": 32, "n_layer": 2, "n_head": 2}}


class Gpt2Adapter(LLMAdapter):
    """GPT-2 causal LM behind ``LLMAdapter`` (``inputs_embeds`` in, logits out)."""

    lora_target_modules = ("c_attn",)

    def __init__(
        self,
        pretrained: str | None = None,
        random_init: bool = False,
        arch: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        from cora_kit.models.hf_assets import tiny_tokenizer_dir

        if pretrained is None and not random_init:
            raise ValueError("gpt2 needs pretrained=<folder> or random_init=True")
        tok_dir = tokenizer or (pretrained if not random_init else str(tiny_tokenizer_dir()))
        tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True, trust_remote_code=trust_remote_code)
        tok.add_tokens([self.vision_token], special_tokens=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        if random_init:
            cfg = GPT2Config(vocab_size=len(tok), n_positions=512, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, **dict(arch or {}))
            self.model = GPT2LMHeadModel(cfg)
            self.source = "random-init gpt2"
        else:
            self.model = GPT2LMHeadModel.from_pretrained(pretrained, local_files_only=True)
            self.source = f"pretrained:{pretrained}"
        self.hidden_size = int(self.model.config.n_embd)
        self.num_layers = int(self.model.config.n_layer)
        self.vocab_size = int(self.model.config.vocab_size)
        self._lora = False

    @property
    def vision_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.vision_token))

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, use_cache=False)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: int = 32, num_beams: int = 1) -> list[str]:
        out = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def enable_lora(self, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                            fan_in_fan_out=True, task_type="CAUSAL_LM")
        self.model = get_peft_model(self.model, config)
        self._lora = True

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def lora_is_zero(self) -> bool:
        return not any(bool(p.detach().any()) for n, p in self.model.named_parameters() if "lora_B" in n)

    def set_lora_active(self, active: bool) -> None:
        if not self._lora:
            return
        if not active and not self.lora_is_zero():
            raise RuntimeError("the LoRA adapters are trained; skipping them would change the model")
        if active:
            self.model.base_model.enable_adapter_layers()
        else:
            self.model.base_model.disable_adapter_layers()

    def merge_lora(self) -> None:
        if self._lora:
            self.model = self.model.merge_and_unload()
            self._lora = False

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        return hf_gradient_checkpointing(self.model, enabled)

    def save_pretrained(self, folder: Path) -> list[str]:
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        return sorted(p.name for p in Path(folder).glob("*.safetensors"))


class Gpt2Plugin:
    """What the package's entry-point module holds (``[project.entry-points.cora_kit]``)."""

    @hookimpl
    def register_llm_adapters(self, register):
        register("gpt2-tiny", Gpt2Adapter, params=Gpt2Params, backend="transformers GPT2LMHeadModel + peft",
                 description="random-init GPT-2 for tests")
