"""``exact-match`` and ``exact-match/<kind>``: hand-computed values, files, CLI, per item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cora_kit
from cora_kit.cli import app
from cora_kit.errors import DataError
from cora_kit.eval import scoring
from cora_kit.data.text import normalize_answer

# five items, two kinds; correct by hand: a (case + punctuation), b (second reference,
# extra spaces), e (no kind) -> 3/5 overall; colour: a right, c wrong -> 1/2;
# where: b right, d wrong ("front" is not "front right") -> 1/2
PREDS = {"a": "Red.", "b": "  front   right ", "c": "blue", "d": "front", "e": "Two!"}
REFS = {
    "a": ["red", "it is red"],
    "b": ["on the front right", "front right"],
    "c": ["green"],
    "d": ["front right", "to the front right"],
    "e": ["two", "there are two"],
}
KINDS = {"a": "colour", "b": "where", "c": "colour", "d": "where"}


@pytest.mark.parametrize(
    "text,want",
    [("  The Red, cube! ", "the red cube"), ("Front\tRight", "front right"), ("yes.", "yes"),
     ("it's", "its"), ("", ""), ("a  b\nc", "a b c")],
)
def test_normalisation(text: str, want: str) -> None:
    assert normalize_answer(text) == want


def test_hand_computed_overall_and_per_kind() -> None:
    report = scoring.score(PREDS, REFS, ["exact-match"], kinds=KINDS)
    assert report.values == {"exact-match": 3 / 5, "exact-match/colour": 0.5, "exact-match/where": 0.5}
    assert scoring.score(PREDS, REFS, ["exact-match"]).values == {"exact-match": 3 / 5}  # no kinds
    metric = cora_kit.create("metric", "exact-match")
    assert metric.key == "exact-match" and metric.available() == (True, None)
    assert metric.score_items(PREDS, REFS) == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 1.0}


def test_a_prediction_matching_no_reference_of_its_own_item_is_wrong() -> None:
    # "green" is a reference of c, not of a: references are never pooled across items
    report = scoring.score({"a": "green", "c": "red"}, {"a": ["red"], "c": ["green"]}, ["em"])
    assert report.values["exact-match"] == 0.0


def test_per_item_values_and_per_kind_subsets() -> None:
    per_item, missing = scoring.per_item_scores(PREDS, REFS, ["exact-match"], kinds=KINDS)
    assert missing == {}
    assert per_item["exact-match"] == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 1.0}
    assert per_item["exact-match/colour"] == {"a": 1.0, "c": 0.0}
    assert per_item["exact-match/where"] == {"b": 1.0, "d": 0.0}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _files(tmp_path: Path) -> tuple[Path, Path]:
    preds = _write(tmp_path / "predictions.jsonl", [{"id": k, "prediction": v} for k, v in PREDS.items()])
    refs = _write(
        tmp_path / "references.jsonl",
        [{"id": k, "references": v, **({"kind": KINDS[k]} if k in KINDS else {})} for k, v in REFS.items()],
    )
    return preds, refs


def test_kinds_come_from_the_references_file(tmp_path: Path) -> None:
    preds, refs = _files(tmp_path)
    assert scoring.read_kinds(refs) == KINDS
    values = scoring.score_files(preds, refs, ["exact-match"]).values
    assert values["exact-match/where"] == 0.5 and values["exact-match"] == 0.6


def test_conflicting_kinds_name_the_line(tmp_path: Path) -> None:
    refs = _write(tmp_path / "r.jsonl", [{"id": "a", "reference": "x", "kind": "colour"},
                                         {"id": "a", "reference": "y", "kind": "where"}])
    with pytest.raises(DataError, match=r"r.jsonl:2: id 'a' has kind 'where' here and 'colour' on line 1"):
        scoring.read_kinds(refs)
    bad = _write(tmp_path / "b.jsonl", [{"id": "a", "reference": "x", "kind": 3}])
    with pytest.raises(DataError, match=r"b.jsonl:1: field 'kind' must be a non-empty string"):
        scoring.read_kinds(bad)


def test_cli_prints_overall_and_per_kind(tmp_path: Path) -> None:
    preds, refs = _files(tmp_path)
    result = CliRunner().invoke(app, ["eval", "-p", str(preds), "-r", str(refs), "-m", "exact-match", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload == {"protocol": "grouped", "num_items": 5, "exact-match": 0.6, "exact-match/colour": 0.5,
                       "exact-match/where": 0.5, "unavailable": {}}
    table = CliRunner().invoke(app, ["eval", "-p", str(preds), "-r", str(refs), "-m", "exact-match"])
    assert table.exit_code == 0 and "exact-match/colour" in table.output and "0.6000" in table.output


def test_paper_protocol_scores_exact_match_grouped_and_says_so(tmp_path: Path) -> None:
    """exact-match is not a paper column: under --protocol paper it is still the prediction
    against ANY reference of its item (per kind too), next to the per-row paper columns."""
    preds, refs = _files(tmp_path)
    result = CliRunner().invoke(
        app, ["eval", "-p", str(preds), "-r", str(refs), "--protocol", "paper", "-m", "cider,exact-match", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["protocol"] == "paper" and isinstance(payload["cider"], float)
    assert (payload["exact-match"], payload["exact-match/colour"], payload["exact-match/where"]) == (0.6, 0.5, 0.5)
    assert "grouped (not a paper column)" in payload["implementations"]["exact-match"]


def test_in_the_default_metrics() -> None:
    from cora_kit.config import CoraConfig

    assert "exact-match" in scoring.DEFAULT_METRICS
    assert "exact-match" in CoraConfig().eval.metrics
