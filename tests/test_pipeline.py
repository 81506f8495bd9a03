"""CoraModel: tiny preset end to end, the seed freeze schedule, checkpoints, cache keys."""

from __future__ import annotations

import pytest
import torch

from cora_kit.config import resolve_config
from cora_kit.errors import CheckpointError, MissingWeightsError
from cora_kit.pipeline import CoraModel

QUERIES = ["how many red objects are there?", "where is the blue ball?"]
ANSWERS = ["two", "behind the viewer"]


@pytest.fixture(scope="module")
def tiny() -> CoraModel:
    # the seed's freeze table (the tiny preset itself trains its random-init LM fully)
    return CoraModel.from_config(resolve_config("tiny", overrides=["model.llm.trainable=seed"]))


def _latent(model: CoraModel, stage: int, B: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    views = model.tile(torch.rand(B, 3, 256, 512))
    return model.resample(model.encode_trainable(model.encode_frozen(views, stage), stage))


def test_tiny_preset_end_to_end_shapes_and_finite_losses(tiny):
    m = tiny
    assert type(m.encoder.model).__name__ == "SiglipVisionModel"
    assert type(m.llm.model.get_base_model()).__name__ == "Qwen3ForCausalLM"
    m.set_stage(2)
    views = m.tile(torch.rand(2, 3, 256, 512))
    assert views.shape == (2, 9, 3, 64, 64)
    hidden = m.encode_frozen(views, 2)
    assert hidden.shape == (2, 9, 16, m.encoder.hidden_size)
    latent = m.resample(m.encode_trainable(hidden, 2))
    assert latent.shape == (2, 9, 16, 64)
    stitched = m.projector(latent)
    assert stitched.tokens.shape == (2, 88, m.llm.hidden_size)  # 4 x (4 + 7*2) + 16
    fused = m.fusion(stitched.tokens, QUERIES, m.llm.embed_tokens, ANSWERS)
    out = m.llm(fused.inputs_embeds, fused.attention_mask, labels=fused.labels)
    assert out.logits.shape == (*fused.inputs_embeds.shape[:2], m.llm.model.get_input_embeddings().weight.shape[0])
    loss, logs = m.lm_loss(latent, QUERIES, ANSWERS)
    assert torch.isfinite(loss) and logs["answer_tokens"] == 6  # "two"+eos (2), "behind the viewer"+eos (4)
    ov, ov_logs = m.overlap_loss(latent)
    assert torch.isfinite(ov) and ov.dim() == 0
    answers = m.generate(latent, QUERIES, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def _trainable_names(m: CoraModel) -> set[str]:
    return {n for n, p in m.named_parameters() if p.requires_grad}


def test_freeze_schedule_matches_the_seed_table(tiny):
    m = tiny
    k = m.config.model.encoder.num_trainable_blocks
    last = m.encoder.num_blocks - k
    counts = m.set_stage(1)
    names = _trainable_names(m)
    enc = {n for n in names if n.startswith("encoder.")}
    assert enc and all(f"layers.{last}." in n or "post_layernorm" in n for n in enc)
    assert {n.split(".")[0] for n in names} == {"encoder", "resampler", "overlap_head"}
    assert counts["encoder_blocks"] > 0 and counts["resampler"] > 0
    m.set_stage(2)
    assert {n.split(".")[0] for n in _trainable_names(m)} == {"resampler", "projector"}
    counts = m.set_stage(3)
    names = _trainable_names(m)
    llm = {n for n in names if n.startswith("llm.")}
    assert llm and all("lora_" in n for n in llm)  # LoRA only: no base LLM weight trains
    assert {n.split(".")[0] for n in names} == {"projector", "llm"}
    assert counts == {"projector": 64 * 128 + 128, "lora": sum(p.numel() for p in m.llm.lora_parameters())}
    with pytest.raises(ValueError, match="stage"):
        m.set_stage(4)


def test_gradients_reach_exactly_the_trainable_groups(tiny):
    m = tiny
    for stage in (2, 3):
        m.set_stage(stage)
        m.zero_grad(set_to_none=True)
        loss, _ = m.lm_loss(_latent(m, stage), QUERIES, ANSWERS)
        loss.backward()
        with_grad = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None}
        assert with_grad == ({"resampler", "projector"} if stage == 2 else {"projector", "llm"})
        if stage == 3:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.llm.lora_parameters())
    m.zero_grad(set_to_none=True)


def test_param_groups_scale_the_resampler_and_projector_lr_in_stage2(tiny):
    cfg = tiny.config.stages.stage2.model_copy(update={"resampler_lr_scale": 0.1, "projector_lr_scale": 0.5})
    groups = {g["name"]: g for g in tiny.param_groups(2, cfg)}
    assert set(groups) == {"resampler", "projector"}
    assert groups["resampler"]["lr"] == pytest.approx(cfg.lr * 0.1)
    assert groups["projector"]["lr"] == pytest.approx(cfg.lr * 0.5)
    # 0: the projector keeps its weights in this stage (no optimizer group)
    frozen = cfg.model_copy(update={"projector_lr_scale": 0.0})
    tiny.set_stage(2)
    assert {g["name"] for g in tiny.param_groups(2, frozen)} == {"resampler"}
    assert not any(p.requires_grad for p in tiny.projector.parameters())
    tiny.set_stage(2)
    assert all(p.requires_grad for p in tiny.projector.parameters())


def test_trainable_state_dict_round_trip_and_errors():
    a = CoraModel.from_config(resolve_config("tiny", overrides=["seed=1"]))
    b = CoraModel.from_config(resolve_config("tiny", overrides=["seed=2"]))
    state = a.trainable_state_dict(3)
    assert state and all(n.startswith(("projector.", "llm.")) for n in state)
    b.load_trainable_state_dict(state)
    for n, t in b.trainable_state_dict(3).items():
        torch.testing.assert_close(t, state[n])
    name = next(iter(state))
    with pytest.raises(CheckpointError, match="does not exist"):
        b.load_trainable_state_dict({"projector.nope": state[name]})
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        b.load_trainable_state_dict({name: torch.zeros(3, 3)})
    b.load_trainable_state_dict({"projector.nope": state[name]}, strict=False)


def test_same_seed_same_model():
    a = CoraModel.from_config(resolve_config("tiny"))
    b = CoraModel.from_config(resolve_config("tiny"))
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), n


def test_encoder_cache_key_tracks_frozen_weights(tiny):
    m = tiny
    k1, k2 = m.encoder_cache_key(1), m.encoder_cache_key(2)
    assert k1 != k2 and m.encoder_cache_key(1) == k1
    last = m.encoder.blocks[-1].mlp.fc1.weight
    with torch.no_grad():
        last.add_(1.0)  # a Stage-1 update of a trainable block: Stage 1's frozen prefix is unchanged
    try:
        assert m.encoder_cache_key(1) == k1 and m.encoder_cache_key(2) != k2
        first = m.encoder.blocks[0].mlp.fc1.weight
        with torch.no_grad():
            first.add_(1.0)
        assert m.encoder_cache_key(1) != k1
        with torch.no_grad():
            first.sub_(1.0)
    finally:
        with torch.no_grad():
            last.sub_(1.0)


def test_full_token_geometry_1408_tokens():
    """The paper's token geometry on a small model: 16x16 grids, stride-views -> 1,408 tokens."""
    cfg = resolve_config("tiny", overrides=[
        "model.tiler.options.size=64", "model.encoder.arch.image_size=64", "model.encoder.arch.patch_size=4",
        "model.resampler.name=mlp", "model.resampler.options={hidden_dim: 64}",
    ])
    m = CoraModel.from_config(cfg)
    m.set_stage(2)
    assert m.grid == (16, 16) and m.projector.num_tokens == 1408
    latent = _latent(m, 2, B=1)
    loss, logs = m.lm_loss(latent, QUERIES[:1], ANSWERS[:1])
    assert torch.isfinite(loss) and logs["seq_len"] > 1408
    # the seed's strip pairing runs on the same grid
    strip = CoraModel.from_config(resolve_config("tiny", overrides=["model.correspondence_mode=seed-strip"]))
    assert strip.correspondences.mode == "seed-strip"


def test_paper_preset_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="siglip2-so400m-patch16-256"):
        CoraModel.from_config(resolve_config("paper"))


def test_plugin_metadata_names_backends(tiny):
    meta = tiny.plugin_metadata()
    assert meta["encoder"]["name"] == "siglip2" and meta["llm"]["name"] == "qwen3"
    assert meta["resampler"]["backend"] == "torch scan"
    assert meta["layout"]["vision_tokens"] == 88 and meta["encoder"]["distribution"] == "cora-kit"


def test_full_llm_option_trains_the_lm_in_stages_2_and_3_only():
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel

    cfg = resolve_config("tiny", overrides=["model.llm.trainable=full", "model.resampler.name=mlp"])
    model = CoraModel.from_config(cfg)
    llm_ids = {id(p) for p in model.llm.parameters()}
    s1 = model.set_stage(1)
    assert "llm_full" not in s1 and not any(p.requires_grad for p in model.llm.parameters())
    s2 = model.set_stage(2)
    assert s2["llm_full"] > 0 and "lora" not in s2
    model.train()
    assert model.llm.training  # not kept in eval mode when it trains
    s3 = model.set_stage(3)
    assert s3["llm_full"] == s2["llm_full"] and s3["lora"] > 0
    assert all(p.requires_grad for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.resampler.parameters())
    assert llm_ids


def test_cora_model_implements_the_engine_protocol(tiny):
    """The engine and serving are written against train.protocol.CoraModelLike."""
    from cora_kit.train.protocol import CoraModelLike

    assert isinstance(tiny, CoraModelLike)
    assert tiny.latent_grid == tiny.resampler.output_grid(tiny.grid)
