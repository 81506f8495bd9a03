"""Qwen3 LLM adapter (seed component 5): transformers causal LM + tokenizer + peft LoRA.

Paper: ``Qwen/Qwen3-0.6B`` (hidden 1024, 28 layers, 596M parameters with tied
embeddings), LoRA r 32 / alpha 64 / dropout 0.1 on q, k, v, o, gate, up, down (20.2M
adapter parameters). The tokenizer gets the special token ``<|vision|>``; the embedding
matrix is resized only when the tokenizer outgrows it (Qwen3's 151,936 rows already leave
room). The model is driven through ``inputs_embeds``; ``trust_remote_code`` stays False
unless the user asks for it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from cora_kit.errors import ConfigError
from cora_kit.interfaces import LLMAdapter, LLMParams, hf_gradient_checkpointing
from cora_kit.models import hf_assets
from cora_kit.models.fusion import IGNORE_INDEX

PAPER_ID = "Qwen/Qwen3-0.6B"
SECTION = "model.llm"


class Qwen3Params(LLMParams):
    """``pretrained``: local path or hub id; ``random_init``: the architecture of
    ``pretrained`` (plus ``arch`` overrides, e.g. ``vocab_size``) without weights;
    ``tokenizer``: path/id or ``cora-kit-tiny`` (the packaged tiny tokenizer); None: the
    one of ``pretrained``, or the tiny one for random-init builds."""

    #: small random-init build (tiny tokenizer) for ``cora_kit.testing`` conformance checks
    testing_params: ClassVar[dict[str, Any]] = {
        "random_init": True,
        "arch": {"vocab_size": 768, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16},
    }

    pretrained: str | None = PAPER_ID
    attn_implementation: str = "sdpa"


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Tokenizer from a local path / hub-cache id, or the packaged tiny one."""
    from transformers import AutoTokenizer

    if name == hf_assets.TINY_TOKENIZER:
        folder = hf_assets.tiny_tokenizer_dir()
    else:
        folder = hf_assets.resolve_pretrained(name, "tokenizer", SECTION)
    return AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=trust_remote_code
    )


class Qwen3Adapter(LLMAdapter):
    """A causal LM behind the ``LLMAdapter`` contract (``inputs_embeds`` in, logits out)."""

    def __init__(
        self,
        pretrained: str | None = PAPER_ID,
        arch: dict[str, Any] | None = None,
        random_init: bool = False,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        arch = dict(arch or {})
        if pretrained is None:
            random_init = True
        if tokenizer is None:
            # random-init builds use the packaged tiny tokenizer unless one is named
            tokenizer = hf_assets.TINY_TOKENIZER if random_init else pretrained
        tok = load_tokenizer(str(tokenizer), trust_remote_code)
        tok.add_tokens([self.vision_token], special_tokens=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        if not random_init:
            if arch:
                raise ConfigError(
                    f"model.llm.arch overrides ({', '.join(sorted(arch))}) apply to random-init builds"
                    f" only; with pretrained '{pretrained}' set random_init or drop arch"
                )
            folder = hf_assets.resolve_pretrained(str(pretrained), "language model", SECTION)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(folder),
                local_files_only=True,
                trust_remote_code=trust_remote_code,
                attn_implementation=attn_implementation,
                dtype=torch.float32,
            )
            self.source = f"pretrained:{folder}"
        else:
            base = hf_assets.architecture_config(pretrained or PAPER_ID, "language model", SECTION)
            base = {k: v for k, v in base.items() if k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
            # special-token ids follow the tokenizer actually used (it may be the tiny one)
            base.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            base.update(arch)
            model_type = base.pop("model_type", "qwen3")
            config = AutoConfig.for_model(model_type, **base)
            config._attn_implementation = attn_implementation
            self.model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
            self.source = "random-init:" + json.dumps(base, sort_keys=True, default=str)
        if len(tok) > self.model.get_input_embeddings().weight.shape[0]:
            # new rows start at the mean of the others (transformers' default), which needs real
            # values: a meta-device build (model-summary) only sizes them
            on_meta = self.model.get_input_embeddings().weight.is_meta
            self.model.resize_token_embeddings(len(tok), mean_resizing=not on_meta)
        self.hidden_size = int(self.model.config.hidden_size)
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        self.lora_enabled = False

    @property
    def vision_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.vision_token))

    @property
    def end_token_ids(self) -> list[int]:
        """Tokens that end an answer (end of turn, end of text)."""
        ids = {self.tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B,L]`` -> ``[B,L,D_lm]``."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """``inputs_embeds`` ``[B,L,D]`` -> output with ``.logits`` ``[B,L,V]`` (+ ``.loss``)."""
        self._check_inputs(inputs_embeds, attention_mask)
        return self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, use_cache=False
        )

    def answer_loss(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean next-token cross-entropy on the labelled tokens, with the LM head applied only
        at the K positions that predict a label in some row (transformers' ``logits_to_keep``):
        logits ``[B,K,V]`` instead of ``[B,L,V]``; the same value as ``forward(...).loss``."""
        self._check_inputs(inputs_embeds, attention_mask)
        if labels.shape != attention_mask.shape:
            raise ValueError(f"labels {list(labels.shape)} do not match inputs_embeds {list(inputs_embeds.shape[:2])}")
        # position t predicts token t+1 (transformers' shift)
        keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        out = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
        )
        targets = labels[:, keep + 1]
        return F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    def _check_inputs(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.hidden_size:
            raise ValueError(
                f"qwen3 expects inputs_embeds [B,L,{self.hidden_size}]; got {list(inputs_embeds.shape)}"
            )
        if attention_mask.shape != inputs_embeds.shape[:2]:
            raise ValueError(
                f"attention_mask {list(attention_mask.shape)} does not match inputs_embeds {list(inputs_embeds.shape[:2])}"
            )

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        """transformers' own switch on the wrapped model (non-reentrant)."""
        return hf_gradient_checkpointing(self.model, enabled)

    def enable_lora(self, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> None:
        """Wrap the LM in peft LoRA; base weights frozen, adapters trainable."""
        from peft import LoraConfig, get_peft_model

        if self.lora_enabled:
            raise RuntimeError("LoRA is already enabled on this adapter")
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
        )
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            # an adapter on lm_head (tiny preset) deliberately stays untied from the input embedding
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*ensure_weight_tying.*")
            self.model = get_peft_model(self.model, config)
        self.lora_enabled = True

    def set_lora_active(self, active: bool) -> None:
        """Run (True) or skip (False) the adapter layers; skipping is refused once an
        adapter is non-zero, since only a zero adapter is a no-op."""
        if not self.lora_enabled:
            return
        if not active and not self.lora_is_zero():
            raise RuntimeError("LoRA adapters are trained (non-zero); skipping them would change the model")
        if active:
            self.model.base_model.enable_adapter_layers()
        else:
            self.model.base_model.disable_adapter_layers()

    def lora_is_zero(self) -> bool:
        """True when every ``lora_B`` is zero (the adapters do not change the LM yet)."""
        return not any(bool(p.detach().any()) for n, p in self.model.named_parameters() if "lora_B" in n)

    def lora_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter weights (empty before ``enable_lora`` and after ``merge_lora``)."""
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def merge_lora(self) -> None:
        """Fold LoRA into the base weights (peft ``merge_and_unload``); a no-op without it."""
        if not self.lora_enabled:
            return
        _untie_adapted_lm_head(self.model)
        self.model = self.model.merge_and_unload()
        self.lora_enabled = False

    def save_pretrained(self, folder: Path) -> list[str]:
        """The LM (``save_pretrained``, safetensors; LoRA must be merged) and its tokenizer
        (with ``<|vision|>``); ``Qwen3Adapter(pretrained=folder)`` loads both back."""
        if self.lora_enabled:
            raise RuntimeError("merge_lora() before save_pretrained(): the adapters are not part of the base weights")
        folder = Path(folder)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        return sorted(str(p.relative_to(folder)) for p in folder.glob("*.safetensors"))

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int = 32,
        num_beams: int = 1,
    ) -> list[str]:
        """Greedy (``num_beams=1``) or beam decoding of left-padded fused prompts."""
        ends = self.end_token_ids
        out = self.model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=ends,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def _untie_adapted_lm_head(peft_model: nn.Module) -> None:
    """Merging a LoRA on ``lm_head`` into weights tied to the input embeddings would change
    the embeddings too: give ``lm_head`` its own copy first (and record it untied)."""
    base = peft_model.get_base_model()
    config = base.config
    head = base.get_output_embeddings()
    if head is None or not getattr(config, "tie_word_embeddings", False):
        return
    layer = getattr(head, "base_layer", None)
    if layer is None:  # no adapter on lm_head: tying stays exact
        return
    layer.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
    config.tie_word_embeddings = False
    text_config = getattr(config, "get_text_config", lambda: config)()
    if text_config is not config:
        text_config.tie_word_embeddings = False
