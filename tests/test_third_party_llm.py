"""A third-party LLM adapter written from docs/plugins.md alone (``third_party_gpt2.py``: a
random-init GPT-2 with peft LoRA) passes ``cora-kit check-plugin``, then builds, trains all
three stages in a tiny run, exports and captions: everything the core calls is in the contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cora_kit import hookimpl
from cora_kit.cli import main
from cora_kit.config import resolve_config
from cora_kit.errors import ConfigError
from cora_kit.interfaces import LLMAdapter
from cora_kit.pipeline import CoraModel
from cora_kit.serving import caption_files, export_run, load_export, panorama_files
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.engine import run
from third_party_gpt2 import Gpt2Adapter, Gpt2Params, Gpt2Plugin

DIST = "cora-kit-gpt2-example"


@pytest.fixture
def gpt2(register_plugin) -> str:
    register_plugin(Gpt2Plugin(), name=DIST, distribution=DIST, version="0.1")
    return "gpt2-tiny"


def test_check_plugin_passes_every_llm_check(gpt2: str, capsys) -> None:
    assert main(["check-plugin", gpt2, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    by_check = {r["check"]: r["status"] for r in results}
    assert by_check.pop("check_merge_and_save") == "passed"
    assert set(by_check.values()) == {"passed"}, by_check
    assert {"check_lora_on_off", "check_generate", "check_params_accept_core_options"} <= set(by_check)


class _NoLoraParameters(Gpt2Plugin):
    @hookimpl
    def register_llm_adapters(self, register):
        class Incomplete(Gpt2Adapter):
            lora_parameters = LLMAdapter.lora_parameters  # still abstract: forgot to implement it

        register("gpt2-incomplete", Incomplete, params=Gpt2Params)


def test_a_missing_method_fails_check_plugin_and_the_build_with_one_line(register_plugin, capsys) -> None:
    """The failure the contract used to hide (a raw AttributeError at the start of Stage 1)."""
    register_plugin(_NoLoraParameters(), name="incomplete", distribution="incomplete")
    assert main(["check-plugin", "gpt2-incomplete"]) == 1
    assert "does not implement lora_parameters of cora_kit.interfaces.LLMAdapter" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.llm.name 'gpt2-incomplete': Incomplete does not implement lora_parameters"):
        CoraModel.from_config(resolve_config("tiny", None, ["model.llm.name=gpt2-incomplete"]))


def test_builds_trains_exports_and_captions_in_a_tiny_run(gpt2: str, tmp_path: Path) -> None:
    sets = [f"data.synth_dir={tmp_path / 'synth'}", "data.synth.n_train=8", "data.synth.n_val=4", "data.synth.n_test=4",
            "stages.stage1.max_steps=2", "stages.stage2.max_steps=2", "stages.stage3.max_steps=2",
            "eval.metrics=[bleu4]", "eval.max_new_tokens=4", "device=cpu",
            f"model.llm.name={gpt2}", "model.llm.arch={n_embd: 64, n_layer: 2, n_head: 2}",
            "model.llm.lora.target_modules=[c_attn]", "model.llm.trainable=seed",
            # the seed's Stage 2 (resampler + projector under the frozen LM), not the tiny preset's
            "stages.stage2.resampler_lr_scale=0.1", "stages.stage2.projector_lr_scale=1.0",
            "stages.stage3.projector_lr_scale=1.0"]
    out = tmp_path / "runs" / "gpt2"
    result = run(resolve_config("tiny", None, sets), out, model_factory=CoraModel.from_config, progress=False)
    assert all(ckpt.is_done(out / f"stage{k}") for k in (1, 2, 3))
    assert result.stages[3].trainable["lora"] > 0  # Stage 3 trained the adapter's LoRA
    llm = json.loads((out / "plugins.json").read_text())["llm"]
    assert (llm["name"], llm["distribution"]) == (gpt2, DIST)
    n_pred = len((out / "predictions.jsonl").read_text().splitlines())
    assert json.loads((out / "scores.json").read_text())["num_items"] == n_pred > 0

    exported = export_run(out, tmp_path / "exported")
    model, _ = load_export(exported, device="cpu")
    images = panorama_files([tmp_path / "synth" / "images"])[:2]
    rows = caption_files(model, images, max_new_tokens=3)
    assert len(rows) == 2 and all(isinstance(r["caption"], str) for r in rows)
