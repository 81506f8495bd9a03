"""Every registered resampler builds in every preset and runs end to end through ``cora-kit run``
(Stages 1-3 for a few steps, then captions and scores on the test split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import cora_kit
from cora_kit.cli import main
from cora_kit.config import available_presets, resolve_config
from cora_kit.commands.model_summary import meta_config
from cora_kit.pipeline import CoraModel
from cora_kit.registry import REGISTRY
from cora_kit.testing import small_params

RESAMPLERS = sorted(p.name for p in cora_kit.list_plugins("resampler"))
#: fewer learned queries than the paper's 256 (which keep a 16x16 grid): 16 keep tiny's 4x4
FEWER_TOKENS: dict[str, dict[str, Any]] = {
    "perceiver": {"num_latents": 16, "depth": 1, "num_heads": 2},
    "qformer": {"num_queries": 16, "depth": 1, "num_heads": 2},
    "bimamba": {"num_layers": 1, "d_state": 8},
    "c-abstractor": {"depth": 1},
}
FAST = ["--set", "device=cpu", "--set", "eval.metrics=[sacrebleu]", "--set", "eval.max_new_tokens=3",
        "--set", "stages.stage2.grad_accum=1"]
for _s in (1, 2, 3):
    FAST += ["--set", f"stages.stage{_s}.max_steps=2", "--set", f"stages.stage{_s}.batch_size=4"]


def _small_options(name: str) -> list[str]:
    """``--resampler-opt`` flags: the testing kit's small sizes (dims come from the model)."""
    opts = {k: v for k, v in small_params(REGISTRY.lookup("resampler", name)).items() if k not in ("in_dim", "out_dim")}
    opts.update(FEWER_TOKENS.get(name, {}))
    return [x for k, v in opts.items() for x in ("--resampler-opt", f"{k}={v}")]


def _build_cases() -> list[Any]:
    """(resampler, preset): the paper preset's meta build takes ~1 s each, so outside the
    default run except for the two that once could not build or evaluate there."""
    cases = []
    for preset in available_presets():
        for name in RESAMPLERS:
            slow = preset != "tiny" and name not in ("identity", "masked-drop")
            cases.append(pytest.param(name, preset, marks=[pytest.mark.slow] if slow else []))
    return cases


@pytest.mark.parametrize("name,preset", _build_cases())
def test_builds_in_every_preset(name: str, preset: str) -> None:
    cfg = resolve_config(preset, None, [f"model.resampler.name={name}"])
    model = CoraModel.from_config(meta_config(cfg), device="meta")
    layout = model.plugin_metadata()["layout"]
    width = model.encoder.hidden_size if name == "identity" else cfg.model.latent_dim
    assert layout["latent_dim"] == width == model.projector.linear.in_features
    assert model.projector.linear.out_features == model.llm.hidden_size
    assert layout["vision_tokens"] > 0


def test_identity_in_the_paper_preset_keeps_the_encoder_width() -> None:
    cfg = resolve_config("paper", None, ["model.resampler.name=identity"])
    model = CoraModel.from_config(meta_config(cfg), device="meta")
    assert model.encoder.hidden_size == 1152 and cfg.model.latent_dim == 1024
    assert model.projector.linear.in_features == 1152 and model.projector.linear.out_features == 1024
    head_in = [m for m in model.overlap_head.modules() if isinstance(m, torch.nn.Linear)][0].in_features
    assert head_in == 1152
    assert sum(p.numel() for p in model.resampler.parameters()) == 0


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("every") / "synth"
    assert main(["data", "synth", "--out", str(out), "--n-train", "8", "--n-val", "4", "--n-test", "4",
                 "--size", "32x64"]) == 0
    return out


@pytest.mark.parametrize("name", RESAMPLERS)
def test_trains_and_evaluates_through_cora_kit_run(name: str, synth: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = ["run", "--resampler", name, "--loss", "vicreg", "--data", str(synth), "--out", str(runs),
            "--feature-cache", str(synth.parent / "cache"), "--plain", "--name", name, *FAST, *_small_options(name)]
    assert main(argv) == 0
    run = runs / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"]: r["step"] for r in rows} == {1: 2, 2: 2, 3: 2}
    scores = json.loads((run / "scores.json").read_text())
    items = json.loads((synth / "metadata.json").read_text())["splits"]["test"]["samples"]  # (image, query) pairs
    assert scores["num_items"] == items > 0 and {"panorama", "blank", "shuffled", "text_prior"} <= set(scores)
    assert scores["panorama"]["sacrebleu"] is not None
    assert len((run / "predictions.jsonl").read_text().splitlines()) == items
    assert json.loads((run / "plugins.json").read_text())["resampler"]["name"] == name
