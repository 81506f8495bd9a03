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
            "stages.stage3.max_steps=2", "eval.metrics=[bleu4,exact-match]", "eval.max_new_tokens=4", "device=cpu",
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
    assert {"panorama", "blank", "shuffled", "text_prior"} <= set(scores)
    n_pred = len((tiny_run / "predictions.jsonl").read_text().splitlines())
    assert n_pred == scores["num_items"] == 16 > 0  # 4 test images x 4 queries


def test_real_pipeline_controls_and_kinds(tiny_run: Path) -> None:
    scores = json.loads((tiny_run / "scores.json").read_text())
    # the synthetic set has scenes: the blank control is each scene without its objects
    assert scores["controls"]["blank"].startswith("objects-removed")
    refs = [json.loads(x) for x in (tiny_run / "references.jsonl").read_text().splitlines()]
    assert all(r["kind"] == k for r, k in zip(refs, (r["kind"] for r in refs), strict=True))
    assert sum(scores["kinds"].values()) == 16 and set(scores["kinds"]) <= {r["kind"] for r in refs}
    for cond in ("panorama", "shuffled", "blank", "text_prior"):
        name = "predictions.jsonl" if cond == "panorama" else f"predictions_{cond}.jsonl"
        rows = [json.loads(x) for x in (tiny_run / name).read_text().splitlines()]
        assert [set(r) for r in rows] == [{"id", "prediction"}] * 16
        assert [r["id"] for r in rows] == [r["id"] for r in refs]
        assert {f"exact-match/{k}" for k in scores["kinds"]} <= set(scores[cond])
    summary = (tiny_run / "summary.md").read_text()
    assert "## Exact match per query kind" in summary and "| text prior |" in summary


def test_stage1_checkpoint_holds_only_stage1_groups(tiny_run: Path) -> None:
    names = ckpt.load_final(tiny_run / "stage1").keys()
    assert any(n.startswith("resampler.") for n in names)
    assert any(n.startswith("overlap_head.") for n in names)
    assert not any(n.startswith(("llm.", "projector.")) for n in names)


def test_a_stage_with_nothing_to_train_is_a_config_error(tmp_path: Path) -> None:
    # the tiny preset holds the resampler and projector in Stage 2; with the seed's frozen LM
    # nothing is left to train there
    from cora_kit.errors import ConfigError

    sets = [f"data.synth_dir={tmp_path / 'synth'}", "data.synth.n_train=4", "data.synth.n_val=2",
            "data.synth.n_test=2", "stages.stage1.max_steps=1", "model.llm.trainable=seed",
            "eval.metrics=[exact-match]", "device=cpu"]
    with pytest.raises(ConfigError, match=r"stage 2 has nothing to train.*stages\.stage2"):
        run(resolve_config("tiny", None, sets), tmp_path / "r", model_factory=CoraModel.from_config, progress=False)
    assert not ckpt.is_done(tmp_path / "r" / "stage1")  # refused before any stage trained
