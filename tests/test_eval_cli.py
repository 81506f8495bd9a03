"""``cora-kit eval``: files, --run folders, --json, errors, setup-wordnet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cora_kit.cli import app, main
from cora_kit_builtins.metrics.java import find_java

runner = CliRunner()
needs_java = pytest.mark.skipif(find_java() is None, reason="java not installed")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    preds = _write(
        tmp_path / "predictions.jsonl",
        [
            {"id": "a", "prediction": "a dog runs on the grass"},
            {"id": "b", "prediction": ""},
        ],
    )
    refs = _write(
        tmp_path / "references.jsonl",
        [
            {"id": "a", "reference": "a dog runs on green grass"},
            {"id": "b", "references": ["a cat sleeps on a sofa", "a sleeping cat"]},
            {"id": "a", "reference": "a brown dog running"},
        ],
    )
    return preds, refs


def test_json_output_has_values_nulls_and_reasons(files, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CORA_KIT_SPICE_CORENLP_DIR", raising=False)
    preds, refs = files
    result = runner.invoke(
        app,
        ["eval", "-p", str(preds), "-r", str(refs), "-m", "sacrebleu,spice", "--json",
         "--spice-corenlp-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert list(payload) == ["protocol", "num_items", "sacrebleu", "spice", "unavailable"]
    assert payload["protocol"] == "grouped" and payload["num_items"] == 2
    assert 0.0 < payload["sacrebleu"] < 1.0
    assert payload["spice"] is None
    assert payload["unavailable"]["spice"].startswith("unavailable: SPICE needs Stanford CoreNLP")


@needs_java
def test_table_and_run_folder_with_out(files, tmp_path) -> None:
    preds, refs = files
    out = tmp_path / "eval.json"
    args = ["eval", "--run", str(tmp_path), "-m", "bleu4,cider,spice", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for word in ("bleu4", "bleu1", "cider", "spice", "NaN", "unavailable"):
        assert word in result.output
    assert not (tmp_path / "scores.json").exists()  # the run's own file is cora-kit run's
    scores = json.loads(out.read_text())
    assert scores["cider"] > 0 and scores["spice"] is None and "spice" in scores["unavailable"]


def test_run_without_references_says_where(tmp_path, capsys) -> None:
    _write(tmp_path / "predictions.jsonl", [{"id": 1, "prediction": "x"}])
    assert main(["eval", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "references.jsonl not found" in err and "--references" in err


def test_id_mismatch_is_an_error_listing_ids(files, tmp_path, capsys) -> None:
    preds, _ = files
    refs = _write(tmp_path / "r2.jsonl", [{"id": "a", "references": ["x"]}, {"id": "zz", "reference": "y"}])
    assert main(["eval", "-p", str(preds), "-r", str(refs), "-m", "sacrebleu"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no references: 'b'" in err and "no prediction: 'zz'" in err


def test_bad_line_names_file_and_line(files, tmp_path, capsys) -> None:
    _, refs = files
    preds = tmp_path / "bad.jsonl"
    preds.write_text('{"id": "a", "prediction": "x"}\n{"id": "b", "pred": "y"}\n')
    assert main(["eval", "-p", str(preds), "-r", str(refs), "-m", "sacrebleu"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bad.jsonl:2: missing field 'prediction'" in err


def test_unknown_metric_and_missing_args(files, capsys) -> None:
    preds, refs = files
    assert main(["eval", "-p", str(preds), "-r", str(refs), "-m", "cidr"]) == 2
    assert "did you mean 'cider'" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "--predictions and --references, or --run" in capsys.readouterr().err


def test_setup_wordnet_without_source_says_what_to_install(tmp_path, capsys) -> None:
    code = main(["eval", "setup-wordnet", "--source", str(tmp_path / "no"), "--dest", str(tmp_path)])
    assert code == 2
    assert "apt-get install wordnet-base wordnet-sense-index" in " ".join(
        capsys.readouterr().err.split()
    )
