"""The engine on the real tiny CoraModel (siglip2 + bimamba + qwen3 from configs), a few
steps per stage on a small synthetic set: every stage and output path runs for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cora_kit.config import resolve_config
from cora_kit.pipeline import CoraModel
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.engine import run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    sets = [f"data.synth_dir={root / 'synth'}", "data.synth.n_train=8", "data.synth.n_val=4", "data.synth.n_test=4",
            "stages.stage1.max_steps=2", "stages.stage2.max_steps=1", "stages.stage2.grad_accum=2",
            "stages.stage3.max_steps=2", "eval.metrics=[bleu4]", "eval.max_new_tokens=4", "device=cpu",
            "model.loss.name=densecl"]
    run(resolve_config("tiny", None, sets), root / "runs" / "t", model_factory=CoraModel.from_config, progress=False)
    return root / "runs" / "t"


def test_real_pipeline_writes_the_run_folder(tiny_run: Path) -> None:
    for k in (1, 2, 3):
        assert ckpt.is_done(tiny_run / f"stage{k}")
    plugins = json.loads((tiny_run / "plugins.json").read_text())
    assert plugins["resampler"]["name"] == "bimamba" and plugins["loss"]["name"] == "densecl"
    diag = json.loads((tiny_run / "diagnostics.json").read_text())
    assert {"adj_cos", "eff_rank"} <= set(diag["after"])
    scores = json.loads((tiny_run / "scores.json").read_text())
    assert {"panorama", "blank", "shuffled"} <= set(scores)
    n_pred = len((tiny_run / "predictions.jsonl").read_text().splitlines())
    assert n_pred == scores["num_items"] > 0


def test_stage1_checkpoint_holds_only_stage1_groups(tiny_run: Path) -> None:
    names = ckpt.load_final(tiny_run / "stage1").keys()
    assert any(n.startswith("resampler.") for n in names)
    assert any(n.startswith("overlap_head.") for n in names)
    assert not any(n.startswith(("llm.", "projector.")) for n in names)
