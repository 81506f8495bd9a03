"""Checks of LLM adapters: a tokenizer with ``<|vision|>``, an ``inputs_embeds`` causal LM, LoRA."""

from __future__ import annotations

import torch

from cora_kit.testing.base import Subject, expect, finite, register, shape


def check_vision_token(s: Subject) -> str | None:
    """The tokenizer encodes ``<|vision|>`` as the single id ``vision_token_id``."""
    llm = s.shared("llm")
    ids = llm.tokenizer(llm.vision_token, add_special_tokens=False)["input_ids"]
    expect(list(ids) == [llm.vision_token_id], f"{s.label}: '{llm.vision_token}' encodes to {list(ids)}; expected [{llm.vision_token_id}]")
    return f"id {llm.vision_token_id}"


def check_output_shape(s: Subject) -> str | None:
    """``embed_tokens`` ``[B,L]`` -> ``[B,L,D]``; forward gives logits ``[B,L,V]`` and a finite loss."""
    llm = s.shared("llm")
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    emb = llm.embed_tokens(ids)
    expect(shape(emb) == [2, 7, llm.hidden_size], f"{s.label}.embed_tokens returned {shape(emb)}; expected [2, 7, {llm.hidden_size}]")
    labels = ids.clone()
    labels[:, :3] = -100
    emb = emb.detach().requires_grad_(True)
    out = llm(inputs_embeds=emb, attention_mask=torch.ones_like(ids), labels=labels)
    expect(out.logits.shape[:2] == (2, 7), f"{s.label} returned logits {shape(out.logits)}; expected [2, 7, vocab]")
    expect(out.loss is not None and out.loss.dim() == 0 and finite(out.loss), f"{s.label}: loss {out.loss}; expected a finite scalar")
    out.loss.backward()
    expect(emb.grad is not None and finite(emb.grad), f"{s.label}: no finite gradient reached inputs_embeds")
    return None


def check_lora_trainable_only(s: Subject) -> str | None:
    """After ``enable_lora`` only adapter weights are trainable; ``generate`` returns B strings."""
    llm = s.make()
    llm.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in llm.named_parameters() if p.requires_grad]
    expect(trainable and all("lora" in n for n in trainable), f"{s.label}: trainable after enable_lora: {trainable[:5]}; expected only lora_* weights")
    emb = llm.embed_tokens(torch.tensor([[1, 2, 3]]))
    texts = llm.generate(emb, torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)
    expect(isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str), f"{s.label}.generate returned {texts!r}; expected a list of 1 string")
    return f"{len(trainable)} LoRA tensors"


for _func in (check_vision_token, check_output_shape, check_lora_trainable_only):
    register(_func, ["llm"])
