"""The controls a trained model is measured against: shuffled panoramas, the in-distribution
blank (objects removed / mean colour) and the text prior; and how a run reports them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_engine import _run
from test_train_fake import make_splits, tiny_config

from cora_kit.data.prior import TextPrior
from cora_kit.data.render import render_erp
from cora_kit.data.scene import COLOURS, Scene
from cora_kit.data.synth import SynthParams, generate_synthetic, load_scenes
from cora_kit.eval.controls import blank_maker, derangement, mean_colour, text_prior_predictions
from cora_kit.errors import CoraKitError
from cora_kit.train.data import load_splits


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("c") / "s", SynthParams(6, 2, 4, 64, 128, seed=2))


def test_derangement_moves_every_image_and_is_seeded() -> None:
    for n in (2, 3, 10, 57):
        perm = derangement(n, seed=1)
        assert sorted(perm) == list(range(n)) and all(i != p for i, p in enumerate(perm))
        assert derangement(n, seed=1) == perm
    assert derangement(57, seed=2) != derangement(57, seed=1)
    with pytest.raises(ValueError):
        derangement(1, seed=0)


def test_mean_colour_blank_is_the_panoramas_own_mean() -> None:
    erp = torch.rand(3, 8, 16)
    blank = mean_colour(erp)
    assert blank.shape == erp.shape
    assert torch.allclose(blank[:, 3, 5], erp.mean(dim=(1, 2)))
    assert torch.equal(blank.amin(dim=(1, 2)), blank.amax(dim=(1, 2)))


def test_objects_removed_blank_is_the_scene_without_objects(synth: Path) -> None:
    from cora_kit.config import resolve_config

    config = resolve_config("tiny", None, [f"data.path={synth}"])
    items = list(load_splits(config).test)
    method, blank = blank_maker("auto", str(synth), items)
    assert method == "objects-removed"
    scenes = load_scenes(synth)
    for item in items[:4]:
        erp = item["erp"]
        empty = blank(item)
        assert empty.shape == erp.shape and empty.dtype == torch.float32
        scene = scenes[Path(item["image_path"]).stem]
        want = render_erp(Scene(scene.sky, scene.ground, ()), 64, 128)
        assert torch.equal((empty * 255).round().to(torch.uint8), torch.from_numpy(want).permute(2, 0, 1))
        # sky and ground where the panorama has no object; no object colour anywhere
        same = (empty == erp).all(0)
        assert 0.6 < same.float().mean() < 1.0
        pixels = empty.permute(1, 2, 0).reshape(-1, 3).numpy()
        for rgb in COLOURS.values():
            assert (np.abs(pixels - np.asarray(rgb)).sum(1) < 0.1).sum() == 0


def test_blank_method_choice_and_errors(synth: Path, tmp_path: Path) -> None:
    items = [{"id": "a", "image_path": "/x/a.png", "erp": torch.rand(3, 4, 8)}]
    assert blank_maker("auto", "fake", items)[0] == "mean-colour"  # no scenes: mean colour, and said so
    assert blank_maker("mean-colour", str(synth), items)[0] == "mean-colour"
    with pytest.raises(CoraKitError, match="objects-removed needs the synthetic set's scenes.*no scenes.jsonl"):
        blank_maker("objects-removed", str(tmp_path), items)
    with pytest.raises(CoraKitError, match="some test images have no scene"):
        blank_maker("objects-removed", str(synth), items)
    with pytest.raises(CoraKitError, match="eval.blank must be one of"):
        blank_maker("black", str(synth), items)


def test_text_prior_is_the_majority_answer_per_template() -> None:
    train = [
        {"query": "what colour is the object at the back?", "answer": "red"},
        {"query": "what colour is the object at the left?", "answer": "blue"},  # same template
        {"query": "what colour is the object at the right?", "answer": "Blue."},  # normalised: blue
        {"query": "is there a red object?", "answer": "no"},
        {"query": "is there a green object?", "answer": "yes"},  # tie 1-1: alphabetical, "no"
        {"query": "how many red objects are there?", "answer": "two"},
    ]
    test = [
        {"id": "1", "query": "what colour is the object at the front?"},
        {"id": "2", "query": "is there a white object?"},
        {"id": "3", "query": "how many black objects are there?"},
        {"id": "4", "query": "what is the man doing?"},  # never seen: overall majority ("blue", 2 of 6)
    ]
    preds, info = text_prior_predictions(train, test)
    assert preds == {"1": "blue", "2": "no", "3": "two", "4": "blue"}
    assert info == {"templates": 3, "unseen_templates": 1}
    assert TextPrior.fit([("q", "a")]).predict("other") == "a"
    with pytest.raises(CoraKitError, match="training split"):
        text_prior_predictions([], test)


def test_run_writes_every_control_and_the_per_kind_summary(tmp_path: Path) -> None:
    splits = make_splits(32, 4, 8)
    for i, item in enumerate(splits.test):
        item["kind"] = ("colour", "hue")[i % 2]
    cfg = tiny_config(**{"eval.metrics": "[cider,exact-match]"})
    result = _run(tmp_path, config=cfg, splits=splits)
    out = tmp_path / "r"
    refs = [json.loads(x) for x in (out / "references.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in refs] == ["colour", "hue"] * 4
    for name in ("predictions.jsonl", "predictions_shuffled.jsonl", "predictions_blank.jsonl", "predictions_text_prior.jsonl"):
        rows = [json.loads(x) for x in (out / name).read_text().splitlines()]
        assert [list(r) for r in rows] == [["id", "prediction"]] * 8
    s = result.scores
    assert s["kinds"] == {"colour": 4, "hue": 4}
    assert set(s["controls"]) == {"shuffled", "blank", "text_prior"}
    for cond in ("panorama", "shuffled", "blank", "text_prior"):
        assert {"cider", "exact-match", "exact-match/colour", "exact-match/hue"} <= set(s[cond])
        # per-kind values average to the overall one (equal counts)
        assert (s[cond]["exact-match/colour"] + s[cond]["exact-match/hue"]) / 2 == pytest.approx(s[cond]["exact-match"])
    # the text prior is the majority training answer of the one template
    answers = [i["answer"] for i in splits.train]
    majority = max(sorted(set(answers)), key=answers.count)
    preds = [json.loads(x)["prediction"] for x in (out / "predictions_text_prior.jsonl").read_text().splitlines()]
    assert set(preds) == {majority}
    summary = (out / "summary.md").read_text()
    table = summary[summary.index("## Exact match per query kind"):]
    assert "| kind | items | trained | shuffled panoramas | blank panorama | text prior |" in table
    assert "| colour | 4 |" in table and "| hue | 4 |" in table and "| **all** | 8 |" in table
    assert "blank panorama: mean-colour" in summary


def test_eval_controls_choose_what_runs(tmp_path: Path) -> None:
    """``eval.controls`` names the controls (``text-prior`` is ``text_prior``); only those
    are captioned, written and scored, and the summary's table and verdict follow."""
    from cora_kit.config import resolve_config
    from cora_kit.errors import ConfigError

    assert resolve_config("tiny").eval.controls == ["shuffled", "blank", "text_prior"]
    assert resolve_config("tiny", None, ["eval.controls=[text-prior]"]).eval.controls == ["text_prior"]
    with pytest.raises(ConfigError, match="eval.controls"):
        resolve_config("tiny", None, ["eval.controls=[black]"])
    result = _run(tmp_path, config=tiny_config(**{"eval.controls": "[text-prior, shuffled]"}), splits=make_splits(16, 4, 6))
    out = tmp_path / "r"
    assert (out / "predictions_shuffled.jsonl").is_file() and (out / "predictions_text_prior.jsonl").is_file()
    assert not (out / "predictions_blank.jsonl").exists()
    assert set(result.scores) >= {"panorama", "shuffled", "text_prior"} and "blank" not in result.scores
    assert set(result.scores["controls"]) == {"shuffled", "text_prior"}
    summary = (out / "summary.md").read_text()
    assert "| metric | trained | shuffled panoramas | text prior |" in summary
    result = _run(tmp_path / "none", config=tiny_config(**{"eval.controls": "[]"}), splits=make_splits(16, 4, 6))
    assert set(result.scores) & {"shuffled", "blank", "text_prior"} == set()
    assert "No controls were evaluated" in (tmp_path / "none" / "r" / "summary.md").read_text()
