"""siglip2 encoder, qwen3 adapter, LanguageFusion, tiny tokenizer, model-summary."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import cora_kit
from cora_kit.errors import ConfigError, DataError, MissingWeightsError
from cora_kit.models import hf_assets
from cora_kit.models.fusion import IGNORE_INDEX, LanguageFusion

ENC_ARCH = dict(
    image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
    num_hidden_layers=3, num_attention_heads=2, vision_use_head=False,
)
LLM_ARCH = dict(
    vocab_size=768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, head_dim=16,
)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """No Hugging Face cache: nothing can be found there (and nothing is downloaded)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _encoder(**kw):
    torch.manual_seed(0)
    return cora_kit.create("encoder", "siglip2", random_init=True, arch=ENC_ARCH, **kw)


def _llm(**kw):
    torch.manual_seed(0)
    return cora_kit.create("llm", "qwen3", random_init=True, arch={**LLM_ARCH, **kw.pop("arch", {})}, **kw)


# --- encoder ----------------------------------------------------------------------


def test_siglip2_shapes_and_split_equal_the_transformers_forward():
    enc = _encoder()
    assert type(enc.model).__name__ == "SiglipVisionModel"
    assert enc.grid == (4, 4) and enc.hidden_size == 32 and enc.num_blocks == 3
    x = torch.rand(5, 3, 32, 32)
    out = enc(x)
    assert out.shape == (5, 16, 32)
    ref = enc.model(pixel_values=(x - 0.5) / 0.5).last_hidden_state  # SigLIP processor: mean=std=0.5
    torch.testing.assert_close(out, ref)
    for k in (0, 1, 3):
        torch.testing.assert_close(enc.forward_trainable(enc.forward_frozen(x, k), k), out)
    blocks = enc.trainable_block_parameters(2)
    expected = sum(p.numel() for b in enc.blocks[1:] for p in b.parameters()) + 64  # + post LayerNorm
    assert sum(p.numel() for p in blocks) == expected
    with pytest.raises(ValueError, match=r"\[N,3,s,s\]"):
        enc(torch.rand(5, 32, 32))
    with pytest.raises(ValueError, match="num_trainable_blocks"):
        enc.forward_frozen(x, 4)


def test_siglip2_resizes_views_like_the_processor():
    enc = _encoder()
    x = torch.rand(2, 3, 64, 64)
    assert enc(x).shape == (2, 16, 32)


def test_siglip2_save_pretrained_round_trip_from_a_full_siglip_checkpoint(tmp_path):
    """The hub checkpoint is a full SiglipModel; the vision tower loads from it locally."""
    from transformers import SiglipConfig, SiglipModel

    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16)
    torch.manual_seed(1)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=ENC_ARCH)).eval()
    full.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": [0.25] * 3, "image_std": [0.5] * 3})
    )
    enc = cora_kit.create("encoder", "siglip2", pretrained=str(tmp_path)).eval()
    x = torch.rand(3, 3, 32, 32)
    ref = full.vision_model(pixel_values=(x - 0.25) / 0.5).last_hidden_state
    torch.testing.assert_close(enc(x), ref)
    assert enc.cache_key() != _encoder().cache_key()


def test_missing_paper_weights_say_where_and_how(empty_hub_cache):
    with pytest.raises(MissingWeightsError) as info:
        cora_kit.create("encoder", "siglip2")
    msg = str(info.value)
    assert "google/siglip2-so400m-patch16-256" in msg and str(empty_hub_cache) in msg
    assert "hf download" in msg and "model.encoder.pretrained" in msg
    with pytest.raises(MissingWeightsError, match="Qwen/Qwen3-0.6B"):
        cora_kit.create("llm", "qwen3")
    with pytest.raises(MissingWeightsError, match="no such directory"):
        cora_kit.create("encoder", "siglip2", pretrained="/nonexistent/siglip")


def test_random_init_of_a_set_architecture_uses_the_shipped_config_on_meta():
    with torch.device("meta"):
        enc = cora_kit.create("encoder", "siglip2", random_init=True)
    assert enc.grid == (16, 16) and enc.hidden_size == 1152 and enc.num_blocks == 27
    assert sum(p.numel() for p in enc.parameters()) == 427_888_064


# --- LLM adapter -------------------------------------------------------------------


def test_qwen3_adds_the_vision_token_and_resizes_when_needed():
    llm = _llm(arch={"vocab_size": 700})
    assert type(llm.model).__name__ == "Qwen3ForCausalLM"
    tok = llm.tokenizer
    assert tok.convert_ids_to_tokens(llm.vision_token_id) == "<|vision|>"
    assert llm.model.get_input_embeddings().weight.shape[0] == len(tok) > 700
    ids = torch.tensor([[1, 2, llm.vision_token_id]])
    out = llm(llm.embed_tokens(ids), torch.ones_like(ids), labels=ids)
    assert out.logits.shape == (1, 3, len(tok)) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="inputs_embeds"):
        llm(torch.zeros(1, 3, 7), torch.ones(1, 3, dtype=torch.long))


def test_qwen3_answer_loss_equals_the_full_logits_loss_and_its_gradients():
    """answer_loss applies the LM head only where a label is predicted; ragged answers in
    right-padded rows (as fusion builds them) give the forward loss and the same gradients."""
    torch.manual_seed(0)
    llm = _llm()
    ids = torch.randint(0, 600, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 8:12] = ids[0, 8:12]
    labels[1, 6:9] = ids[1, 6:9]
    labels[2, 5:7] = ids[2, 5:7]

    def loss_and_grads(fn):
        llm.zero_grad()
        emb = llm.embed_tokens(ids).detach().requires_grad_(True)
        loss = fn(emb)
        loss.backward()
        grads = [p.grad.clone() for p in llm.parameters() if p.grad is not None]
        return loss.detach(), emb.grad, grads

    full = loss_and_grads(lambda e: llm(e, mask, labels=labels).loss)
    kept = loss_and_grads(lambda e: llm.answer_loss(e, mask, labels))
    torch.testing.assert_close(kept[0], full[0])
    torch.testing.assert_close(kept[1], full[1])
    assert len(kept[2]) == len(full[2])
    for a, b in zip(kept[2], full[2]):
        torch.testing.assert_close(a, b)
    # and it is a real loss: other labels give another value
    other = labels.clone()
    other[0, 9] = (other[0, 9] + 1) % 600
    assert not torch.isclose(llm.answer_loss(llm.embed_tokens(ids), mask, other), full[0])


def test_qwen3_save_pretrained_round_trip(tmp_path):
    llm = _llm().eval()
    llm.model.save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    again = cora_kit.create("llm", "qwen3", pretrained=str(tmp_path)).eval()
    assert again.vision_token_id == llm.vision_token_id
    ids = torch.tensor([[3, 4, 5, 6]])
    mask = torch.ones_like(ids)
    torch.testing.assert_close(again(again.embed_tokens(ids), mask).logits, llm(llm.embed_tokens(ids), mask).logits)


def test_lora_trains_only_adapters_with_the_expected_size():
    llm = _llm()
    llm.enable_lora(4, 8, 0.0, LORA_TARGETS)
    trainable = {n for n, p in llm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    h, i, q, kv = 32, 64, 2 * 16, 1 * 16  # hidden, mlp, q heads*dim, kv heads*dim
    per_layer = 4 * ((h + q) + (h + kv) * 2 + (q + h) + (h + i) * 2 + (i + h))
    assert sum(p.numel() for p in llm.lora_parameters()) == 2 * per_layer
    with pytest.raises(RuntimeError, match="already"):
        llm.enable_lora(4, 8, 0.0, LORA_TARGETS)


def test_generate_greedy_and_beam_return_text():
    llm = _llm()
    fusion = LanguageFusion(llm.tokenizer, max_text_tokens=32)
    batch = fusion(torch.randn(2, 5, 32), ["what colour is the cube?", "is there a red ball?"], llm.embed_tokens)
    for beams in (1, 2):
        out = llm.generate(batch.inputs_embeds, batch.attention_mask, max_new_tokens=3, num_beams=beams)
        assert len(out) == 2 and all(isinstance(s, str) for s in out)


# --- fusion ------------------------------------------------------------------------


def test_fusion_labels_only_the_answer_and_places_vision_tokens():
    llm = _llm()
    tok = llm.tokenizer
    fusion = LanguageFusion(tok, max_text_tokens=48)
    vision = torch.randn(2, 6, 32)
    queries, answers = ["how many red objects are there?", "where is the blue ball?"], ["two", "behind the viewer"]
    b = fusion(vision, queries, llm.embed_tokens, answers)
    for i, answer in enumerate(answers):
        labelled = b.labels[i][b.labels[i] != IGNORE_INDEX].tolist()
        assert labelled == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        real = b.attention_mask[i].bool()
        assert real[: int(real.sum())].all()  # right padding for training
    # the vision slots hold exactly the vision tokens, in order
    prompt = fusion.prompt_ids(queries[0])
    k = prompt.index(llm.vision_token_id)
    torch.testing.assert_close(b.inputs_embeds[0, k : k + 6], vision[0])
    assert (b.labels[0, : k + 6] == IGNORE_INDEX).all()


def test_fusion_after_query_puts_the_vision_tokens_behind_the_query():
    llm = _llm()
    tok = llm.tokenizer
    before = LanguageFusion(tok, max_text_tokens=48)
    after = LanguageFusion(tok, max_text_tokens=48, vision_placement="after-query")
    query, answer = "where is the blue ball?", "front"
    q_ids = tok(query, add_special_tokens=False)["input_ids"]

    def find(seq: list[int], sub: list[int]) -> int:
        return next(i for i in range(len(seq)) if seq[i : i + len(sub)] == sub)

    for fusion, vision_first in ((before, True), (after, False)):
        prompt = fusion.prompt_ids(query)
        k = prompt.index(llm.vision_token_id)
        assert (k < find(prompt, q_ids)) is vision_first
    # same text tokens, only reordered; the answer stays last and alone carries the loss
    assert sorted(before.prompt_ids(query)) == sorted(after.prompt_ids(query))
    vision = torch.randn(1, 4, 32)
    b = after(vision, [query], llm.embed_tokens, [answer])
    k = after.prompt_ids(query).index(llm.vision_token_id)
    torch.testing.assert_close(b.inputs_embeds[0, k : k + 4], vision[0])
    labelled = b.labels[0][b.labels[0] != IGNORE_INDEX].tolist()
    assert labelled == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with pytest.raises(ConfigError, match="vision_placement"):
        LanguageFusion(tok, vision_placement="between")


def test_fusion_left_pads_for_generation_and_guards_truncation():
    llm = _llm()
    fusion = LanguageFusion(llm.tokenizer, max_text_tokens=24)
    b = fusion(torch.randn(2, 3, 32), ["hi", "what is on the left of the viewer?"], llm.embed_tokens)
    assert b.labels is None and b.attention_mask[:, -1].all() and not b.attention_mask[0, 0]
    room = 24 - (len(fusion.prompt_ids("hi")) - 1)
    long_answer = " ".join(["red"] * (room + 5))
    cut = fusion(torch.randn(1, 3, 32), ["hi"], llm.embed_tokens, [long_answer])
    assert cut.truncated == 1 and int((cut.labels != IGNORE_INDEX).sum()) == room
    with pytest.raises(DataError, match="no room for the answer"):
        LanguageFusion(llm.tokenizer, max_text_tokens=8)(
            torch.randn(1, 3, 32), ["what is on the left of the viewer?"], llm.embed_tokens, ["two"]
        )
    with pytest.raises(DataError, match="vision"):
        fusion(torch.randn(1, 3, 32), ["<|vision|> again"], llm.embed_tokens, ["x"])
    with pytest.raises(ValueError, match="queries"):
        fusion(torch.randn(2, 3, 32), ["only one"], llm.embed_tokens)


# --- tiny tokenizer ----------------------------------------------------------------------


def test_packaged_tiny_tokenizer_covers_the_synthetic_language():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_assets.tiny_tokenizer_dir()), local_files_only=True)
    assert len(tok) <= 768 and tok.eos_token == "<|im_end|>" and tok.chat_template
    for word in ("red", "cube", "viewer", "horizon", "behind", "yellow", "pillar", "three"):
        assert len(tok(f" {word}", add_special_tokens=False)["input_ids"]) == 1, word
    text = "A kitchen with a wooden table, 3 chairs and a window."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: lossless


@pytest.mark.slow
def test_tiny_tokenizer_builder_reproduces_the_shipped_files(tmp_path):
    """Fails when the synthetic set's language changed: rerun
    ``python -m cora_kit.data.tiny_tokenizer`` and commit cora_kit/assets/tiny_tokenizer."""
    from cora_kit.data.tiny_tokenizer import main

    main([str(tmp_path)])
    shipped = json.loads((hf_assets.tiny_tokenizer_dir() / "tokenizer.json").read_text())
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"] == shipped["model"]


# --- model-summary -------------------------------------------------------------------------


def test_model_summary_paper_json_reproduces_the_measured_counts():
    from cora_kit.cli import app

    result = CliRunner().invoke(app, ["model-summary", "--preset", "paper", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    comps = s["components"]
    assert set(comps) == {"encoder", "resampler", "overlap_head", "projector", "llm", "lora"}
    assert comps["encoder"]["params"] == 427_888_064  # so400m tower (~428M, with its pooling head)
    assert comps["llm"]["params"] == 596_049_920  # Qwen3-0.6B, tied embeddings (~596M)
    assert comps["lora"]["params"] == 20_185_088  # r=32 on 7 projections x 28 layers (~20.2M)
    assert comps["projector"]["params"] == 1024 * 1024 + 1024
    assert s["vision_tokens"] == 1408
    t = s["trainable"]
    assert t["stage3"] == comps["lora"]["params"] + comps["projector"]["params"]
    assert t["stage2"] == comps["resampler"]["params"] + comps["projector"]["params"]
    assert comps["encoder"]["trainable"]["stage1"] == 2 * 15_239_504 + 2 * 1152  # last 2 blocks + norm
    assert 5 < s["memory_gib"]["stage2"]["total"] < 40
