"""``model.gradient_checkpointing: true``: the same gradients in every stage, far fewer
saved activations, on the real tiny model (SigLIP + BiMamba + Qwen3 from transformers)."""

from __future__ import annotations

import pytest
import torch

from cora_kit.config import resolve_config
from cora_kit.pipeline import CoraModel
from cora_kit.train.autobatch import saved_activation_bytes
from cora_kit.train.stages import STEP_FNS, stage1_views

ITEMS = [{"query": "what is left of the viewer?", "answer": "a red cube"},
         {"query": "how many balls are there?", "answer": "two"}]


def _model(*sets: str) -> CoraModel:
    return CoraModel.from_config(resolve_config("tiny", None, ["device=cpu", *sets]))


def _stage_grads(model: CoraModel, stage: int) -> tuple[dict[str, torch.Tensor], int]:
    cfg = getattr(model.config.stages, f"stage{stage}")
    model.set_stage(stage)
    model.train()
    erp = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hidden = model.encode_frozen(model.tile(erp), stage)
    if stage == 1:
        hidden = hidden[:, stage1_views(model)]
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)  # the same dropout masks in both runs
        out: list[torch.Tensor] = []
        saved = saved_activation_bytes(lambda: out.append(STEP_FNS[stage](model, hidden, ITEMS, cfg)[0]),
                                       model.parameters())
        loss = out[0]
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, saved


@pytest.mark.parametrize("trainable", ["full", "seed"])
def test_gradients_are_identical_with_checkpointing_and_activations_shrink(trainable: str) -> None:
    model = _model(f"model.llm.trainable={trainable}", "model.resampler.options.num_layers=2")
    results = {}
    for enabled in (False, True):
        done = model.set_gradient_checkpointing(enabled)
        results[enabled] = {s: _stage_grads(model, s) for s in (1, 2, 3)}
    assert set(done) == {"encoder", "resampler", "llm"}
    assert "transformers" in done["encoder"] and "transformers" in done["llm"]
    assert done["resampler"] == "torch.utils.checkpoint on 2 layers"
    for stage in (1, 2, 3):
        (off, saved_off), (on, saved_on) = results[False][stage], results[True][stage]
        assert off.keys() == on.keys() and off, f"stage {stage}: no gradients"
        for name in off:
            assert torch.equal(off[name], on[name]), f"stage {stage}: {name} differs"
        # stage 3 keeps only the LM's activations; the frozen LLM of stage 2 ("seed") is
        # checkpointed too (eval mode, gradients flowing through it)
        assert saved_on < 0.6 * saved_off, f"stage {stage}: saved {saved_on} vs {saved_off} bytes"


def test_config_switch_reaches_every_component_and_is_recorded() -> None:
    model = _model("model.gradient_checkpointing=true")
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.encoder.model.modules())
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.llm.model.modules())
    assert all("forward" in block.__dict__ for block in model.resampler.blocks)
    assert model.plugin_metadata()["gradient_checkpointing"]["resampler"].startswith("torch.utils.checkpoint")
    model.set_gradient_checkpointing(False)
    assert not any("forward" in block.__dict__ for block in model.resampler.blocks)
    assert "gradient_checkpointing" not in model.plugin_metadata()


def test_a_resampler_without_layers_is_reported_not_skipped() -> None:
    with pytest.warns(UserWarning, match="not supported by the resampler plugin 'mlp'"):
        model = _model("model.gradient_checkpointing=true", "model.resampler.name=mlp")
    assert "not supported" in model.gradient_checkpointing["resampler"]


def test_eval_and_no_grad_paths_do_not_checkpoint() -> None:
    model = _model("model.gradient_checkpointing=true")
    model.set_stage(2)
    model.eval()
    erp = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        hidden = model.encode_frozen(model.tile(erp), 2)
        latent = model.resample(hidden)
        texts = model.generate(latent, ["what is left of the viewer?"], max_new_tokens=3)
    assert len(texts) == 1


def test_model_summary_shows_the_effect_on_the_memory_estimate() -> None:
    from cora_kit.commands.model_summary import model_summary

    off = model_summary(resolve_config("paper"))
    on = model_summary(resolve_config("paper", None, ["model.gradient_checkpointing=true"]))
    assert (off["gradient_checkpointing"], on["gradient_checkpointing"]) == (False, True)
    for stage in ("stage1", "stage2", "stage3"):
        a, b = off["memory_gib"][stage], on["memory_gib"][stage]
        assert b["weights"] == a["weights"] and b["grads_and_optimizer"] == a["grads_and_optimizer"]
        assert b["activations"] < 0.45 * a["activations"]  # layers keep their inputs only
        assert off["memory_gib_other_checkpointing"][stage] == b
        assert on["memory_gib_other_checkpointing"][stage] == a


def test_model_summary_cli_prints_both_settings(capsys) -> None:
    from cora_kit.cli import main

    assert main(["model-summary", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert "gradient checkpointing off" in out and "checkpointing on" in out
