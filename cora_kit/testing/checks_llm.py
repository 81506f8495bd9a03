"""Checks of LLM adapters: every method and attribute the core uses on ``LLMAdapter``.

The tokenizer with ``<|vision|>`` (fusion), ``hidden_size`` / ``num_layers`` /
``vocab_size`` (projector, model-summary), ``embed_tokens`` + ``forward`` (Stage 2/3 loss),
``generate`` (evaluation, captioning), LoRA (``enable_lora``, ``lora_parameters``,
``lora_is_zero``, ``set_lora_active``: the freeze schedule), ``merge_lora`` +
``save_pretrained`` (``cora-kit export``), and the parameters the pipeline passes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from cora_kit.testing.base import CheckFailure, CheckSkipped, Subject, close, expect, finite, register, shape


def _ids(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(llm: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return llm(inputs_embeds=llm.embed_tokens(ids), attention_mask=torch.ones_like(ids)).logits.float()


def _with_lora(s: Subject) -> Any:
    """A fresh adapter with LoRA (r 4) on its ``lora_target_modules``."""
    llm = s.make()
    llm.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=list(llm.lora_target_modules))
    return llm


def _perturb_lora(llm: Any) -> None:
    """Make every adapter weight non-zero (as training would)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in llm.lora_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))


def check_vision_token(s: Subject) -> str | None:
    """``vision_token_id`` is a property; the tokenizer encodes ``<|vision|>`` as that single id."""
    llm = s.shared("llm")
    expect(isinstance(llm.vision_token_id, int), f"{s.label}.vision_token_id is {llm.vision_token_id!r};"
           " expected an int (declare it with @property)")
    ids = llm.tokenizer(llm.vision_token, add_special_tokens=False)["input_ids"]
    expect(list(ids) == [llm.vision_token_id], f"{s.label}: '{llm.vision_token}' encodes to {list(ids)}; expected [{llm.vision_token_id}]")
    return f"id {llm.vision_token_id}"


def check_declared_sizes(s: Subject) -> str | None:
    """``hidden_size`` is the embedding width, ``num_layers`` > 0, ``vocab_size`` the logits
    width and at least the tokenizer's length."""
    llm = s.shared("llm")
    for attr in ("hidden_size", "num_layers", "vocab_size"):
        value = getattr(llm, attr, None)
        expect(isinstance(value, int) and value > 0, f"{s.label}.{attr} is {value!r}; expected a positive int")
    logits = _logits(llm, _ids())
    expect(logits.shape[-1] == llm.vocab_size, f"{s.label} returned logits {shape(logits)}; expected the last dim = vocab_size {llm.vocab_size}")
    expect(len(llm.tokenizer) <= llm.vocab_size, f"{s.label}: the tokenizer has {len(llm.tokenizer)} tokens but vocab_size is"
           f" {llm.vocab_size}; resize the embeddings after adding <|vision|>")
    return f"D {llm.hidden_size}, {llm.num_layers} layers, vocab {llm.vocab_size}"


def check_output_shape(s: Subject) -> str | None:
    """``embed_tokens`` ``[B,L]`` -> ``[B,L,D]``; forward gives logits ``[B,L,V]`` and a finite loss;
    ``answer_loss`` (the training loss) equals that loss."""
    llm = s.shared("llm")
    ids = _ids()
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
    with torch.no_grad():
        trained = llm.answer_loss(emb.detach(), torch.ones_like(ids), labels)
        expect(trained.dim() == 0 and torch.allclose(trained, out.loss.detach(), rtol=1e-4, atol=1e-5),
               f"{s.label}.answer_loss gave {float(trained):.6g}, forward's loss {float(out.loss):.6g}; expected the same value")
    return None


def check_generate(s: Subject) -> str | None:
    """``generate(inputs_embeds [B,L,D], attention_mask [B,L], max_new_tokens, num_beams)``
    returns B strings, greedy (deterministic) and with beams, on left-padded prompts."""
    llm = s.shared("llm")
    ids = _ids(2, 5)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding, as fusion builds it
    with torch.no_grad():
        emb = llm.embed_tokens(ids)
        runs = [llm.generate(emb, mask, max_new_tokens=3, num_beams=1) for _ in range(2)]
        beams = llm.generate(emb, mask, max_new_tokens=3, num_beams=2)
    for got in (runs[0], beams):
        expect(isinstance(got, list) and len(got) == 2 and all(isinstance(t, str) for t in got),
               f"{s.label}.generate returned {got!r}; expected a list of 2 strings")
    expect(runs[0] == runs[1], f"{s.label}.generate gave {runs[0]} then {runs[1]} greedily; expected the same")
    return None


def check_lora_trainable_only(s: Subject) -> str | None:
    """``lora_parameters()`` is empty before ``enable_lora`` and exactly the trainable weights after."""
    llm = s.make()
    before = llm.lora_parameters()
    expect(list(before) == [], f"{s.label}.lora_parameters() returned {len(before)} tensors before enable_lora; expected none")
    llm.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=list(llm.lora_target_modules))
    trainable = {id(p) for p in llm.parameters() if p.requires_grad}
    lora = {id(p) for p in llm.lora_parameters()}
    expect(bool(lora), f"{s.label}.lora_parameters() is empty after enable_lora(target_modules={list(llm.lora_target_modules)})")
    expect(trainable == lora, f"{s.label}: after enable_lora {len(trainable)} tensors are trainable but lora_parameters()"
           f" returns {len(lora)}; expected the same set (base weights frozen)")
    return f"{len(lora)} LoRA tensors"


def check_lora_on_off(s: Subject) -> str | None:
    """Fresh adapters are zero (no change to the LM) and can be skipped; trained (non-zero)
    adapters change the LM, and skipping them raises ``RuntimeError``."""
    llm = s.make()
    ids = _ids()
    base = _logits(llm, ids)
    llm.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=list(llm.lora_target_modules))
    expect(llm.lora_is_zero(), f"{s.label}.lora_is_zero() is False right after enable_lora; expected zero-initialised adapters")
    ok, diff = close(_logits(llm, ids), base, atol=1e-4)
    expect(ok, f"{s.label}: fresh LoRA adapters change the logits by {diff:.3g}; expected a no-op (zero init)")
    llm.set_lora_active(False)
    llm.set_lora_active(True)
    _perturb_lora(llm)
    expect(not llm.lora_is_zero(), f"{s.label}.lora_is_zero() is True after the adapter weights changed")
    _, diff = close(_logits(llm, ids), base)
    expect(diff > 1e-5, f"{s.label}: non-zero adapters do not change the logits (max diff {diff:.3g})")
    try:
        llm.set_lora_active(False)
    except RuntimeError:
        return None
    raise CheckFailure(f"{s.label}.set_lora_active(False) skipped non-zero adapters; expected RuntimeError (it would change the model)")


def check_gradient_checkpointing(s: Subject) -> str | None:
    """``set_gradient_checkpointing(True)`` keeps the gradient reaching ``inputs_embeds``
    (Stage 2 back-propagates through the frozen LM, in eval mode) and the LoRA gradients;
    ``""`` means not supported (the pipeline reports it: skipped here)."""
    llm = _with_lora(s)
    _perturb_lora(llm)
    ids = _ids()

    def grads(mode_train: bool) -> list[torch.Tensor]:
        llm.train(mode_train)
        emb = llm.embed_tokens(ids).detach().requires_grad_(True)
        torch.manual_seed(0)  # the same dropout masks in both passes
        out = llm(inputs_embeds=emb, attention_mask=torch.ones_like(ids), labels=ids)
        out.loss.backward()
        got = [emb.grad.clone()] + [p.grad.clone() for p in llm.lora_parameters() if p.grad is not None]
        llm.zero_grad(set_to_none=True)
        return got

    before = {mode: grads(mode) for mode in (False, True)}
    how = llm.set_gradient_checkpointing(True)
    if not how:
        raise CheckSkipped("set_gradient_checkpointing returns '': not supported (model.gradient_checkpointing reports it)")
    after = {mode: grads(mode) for mode in (False, True)}
    llm.set_gradient_checkpointing(False)
    for mode in (False, True):
        expect(len(after[mode]) == len(before[mode]), f"{s.label}: checkpointing changed which tensors get gradients")
        for a, b in zip(after[mode], before[mode], strict=True):
            ok, diff = close(a, b, atol=1e-5, rtol=1e-4)
            expect(ok, f"{s.label} ({'train' if mode else 'eval'} mode): gradients differ by {diff:.3g} with"
                   " gradient checkpointing; expected the same gradients")
    return how


def check_merge_and_save(s: Subject) -> str | None:
    """``merge_lora`` keeps the logits and empties ``lora_parameters``; ``save_pretrained``
    writes safetensors that the factory loads back (``pretrained=folder``) to the same LM."""
    llm = _with_lora(s)
    _perturb_lora(llm)
    ids = _ids()
    want = _logits(llm, ids)
    llm.merge_lora()
    expect(list(llm.lora_parameters()) == [], f"{s.label}.lora_parameters() is not empty after merge_lora")
    ok, diff = close(_logits(llm, ids), want, atol=1e-4, rtol=1e-3)
    expect(ok, f"{s.label}: merge_lora changed the logits by {diff:.3g}; expected the merged LM to equal LM + LoRA")
    with tempfile.TemporaryDirectory() as tmp:
        files = llm.save_pretrained(Path(tmp))
        written = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())
        expect(bool(files) and all(f in written and f.endswith(".safetensors") for f in files),
               f"{s.label}.save_pretrained returned {files!r}; expected the .safetensors files it wrote (wrote {written})")
        pickles = [f for f in written if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
        expect(not pickles, f"{s.label}.save_pretrained wrote pickle files {pickles}; exports hold safetensors only")
        params = {**s.params, "pretrained": tmp, "random_init": False, "arch": {}, "tokenizer": None}
        again = s.spec.factory(**s.spec.validate_params(params)).eval()
        ok, diff = close(_logits(again, ids), want, atol=1e-4, rtol=1e-3)
    expect(ok, f"{s.label} rebuilt from save_pretrained's folder differs by {diff:.3g}; expected the saved LM")
    expect(again.vision_token_id == llm.vision_token_id, f"{s.label}: the reloaded tokenizer's <|vision|> id is"
           f" {again.vision_token_id}, was {llm.vision_token_id}; save the tokenizer with the token")
    return f"{len(files)} weight file(s)"


for _func in (check_vision_token, check_declared_sizes, check_output_shape, check_generate,
              check_lora_trainable_only, check_lora_on_off, check_gradient_checkpointing, check_merge_and_save):
    register(_func, ["llm"])
