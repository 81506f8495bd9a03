"""From a CSV of image URLs to a trained run: ``data fetch`` (loopback server), then ``cora-kit run``
on the folder trains Stages 2-3 on every annotation, logs ``val_loss`` / ``val_adj_cos`` per
epoch, and records every skipped row in ``data-report.json`` and ``summary.md``."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from test_data_fetch import FaultServer, server  # noqa: F401 (the loopback server fixture)

from cora_kit.cli import main
from cora_kit.config import resolve_config
from cora_kit.train.data import Record, SampledTargets, annotation_rows, epoch_items, training_items

RECORDS = [
    {"id": "a#0", "image_path": "/x/a.png", "query": "q1", "answer": "one", "references": ["one", "uno", "eins"]},
    {"id": "b#0", "image_path": "/x/b.png", "query": "q2", "answer": "two", "references": ["two"]},
]


def test_training_items_all_first_sample() -> None:
    rows = training_items(RECORDS, "all")
    assert [(r["id"], r["answer"]) for r in rows] == [("a#0/0", "one"), ("a#0/1", "uno"), ("a#0/2", "eins"), ("b#0/0", "two")]
    assert all(r["references"] == RECORDS[i // 3]["references"] for i, r in enumerate(rows[:3]))
    assert training_items(RECORDS, "first") == RECORDS
    sampled = training_items(RECORDS, "sample", seed=3)
    assert isinstance(sampled, SampledTargets) and len(sampled) == 2
    draws = [tuple(r["answer"] for r in sampled.for_epoch(2, e)) for e in range(12)]
    assert draws[0] == tuple(r["answer"] for r in SampledTargets(RECORDS, 3).for_epoch(2, 0))  # seeded
    assert {d[0] for d in draws} == {"one", "uno", "eins"} and {d[1] for d in draws} == {"two"}
    assert epoch_items(rows, 2, 5) is rows
    assert annotation_rows(RECORDS) == rows
    with pytest.raises(Exception, match="train_targets"):
        training_items(RECORDS, "every")
    assert resolve_config("paper").data.train_targets == "all"  # the seed
    # the tiny preset, tuned on the synthetic set, trains on each query's canonical answer
    assert resolve_config("tiny").data.train_targets == "first"


def test_training_copies_keep_the_records_decode_size() -> None:
    sized = [Record(r, erp_size=(8, 16)) for r in RECORDS]
    assert all(r.erp_size == (8, 16) for r in annotation_rows(sized))
    assert all(r.erp_size == (8, 16) for r in SampledTargets(sized, 0).for_epoch(2, 0))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), restval="")  # url, query, annotation[, kind]
        w.writeheader()
        w.writerows(rows)


FAST = ["--set", "device=cpu", "--set", "eval.metrics=[sacrebleu]", "--set", "eval.max_new_tokens=3",
        "--set", "stages.stage1.batch_size=8", "--set", "stages.stage2.batch_size=16",
        "--set", "stages.stage3.batch_size=16", "--set", "stages.stage2.epochs=2", "--set", "data.on_bad_row=skip",
        "--set", "data.train_targets=all"]  # the seed's (and paper's) rule; tiny's own is first


def test_fetched_folder_trains_on_every_annotation_with_validation(server, tmp_path: Path, capsys) -> None:  # noqa: F811
    s: FaultServer = server
    synth = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(synth), "--n-train", "4", "--n-val", "2", "--n-test", "2",
                 "--size", "32x64"]) == 0
    # the synthetic set, served as a CSV of URLs (QuIC-360 style), with one unusable row per split
    src = tmp_path / "quic"
    src.mkdir()
    for split in ("train", "val", "test"):
        rows = _rows(synth / f"{split}.csv")
        for r in rows:
            path = f"/img/{split}/{Path(r['url']).name}"
            s.files[path] = (synth / r["url"]).read_bytes()
            r["url"] = s.url(path)
        rows.append({"url": rows[0]["url"], "query": "is it there?", "annotation": ""})  # empty annotation
        _write(src / f"{split}.csv", rows)
    _write(src / "test.csv", [*_rows(src / "test.csv"), {"url": s.url("/gone.png"), "query": "q", "annotation": "a"}])
    data = tmp_path / "data"
    assert main(["data", "fetch", str(src), "--out", str(data), "--timeout", "2", "--retries", "0"]) == 1  # /gone.png
    capsys.readouterr()

    out = tmp_path / "runs"
    assert main(["run", "--data", str(data), "--out", str(out), "--name", "r", "--plain", *FAST]) == 0
    err = capsys.readouterr().err
    assert "data: 3 rows skipped (train 1, val 1, test 1: 3 empty annotation)" in err

    run = out / "r"
    report = json.loads((run / "data-report.json").read_text())
    assert report["skipped_total"] == 3 and report["on_bad_row"] == "skip"
    assert {(r["split"], r["category"]) for r in report["skipped_rows"]} == {
        ("train", "empty annotation"), ("val", "empty annotation"), ("test", "empty annotation")}
    last_train_row = len(_rows(data / "train.csv")) + 1  # rows are numbered as lines, the header is row 1
    assert {"split": "train", "file": str(data / "train.csv"), "row": last_train_row, "category": "empty annotation",
            "reason": "empty 'annotation'"} in report["skipped_rows"]
    train_rows = len(_rows(synth / "train.csv"))  # every annotation of the source, nothing else
    assert report["splits"]["train"]["rows_read"] == train_rows == report["training_items_stage2_3"]
    assert report["splits"]["train"]["items"] < train_rows  # grouped per (image, query) for evaluation
    summary = (run / "summary.md").read_text()
    assert "**3 rows were skipped**" in summary and f"Stages 2-3 train on {train_rows} items" in summary

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r or "val_adj_cos" in r]
    per_stage = Counter(r["stage"] for r in val)
    assert per_stage == {1: 1, 2: 2, 3: 1}  # one per epoch (Stage 2 runs 2 epochs)
    val_rows = len(_rows(synth / "val.csv"))
    assert all(r["val_items"] == val_rows for r in val if r["stage"] > 1)
    assert all(0 < r["val_loss"] < 20 for r in val if r["stage"] > 1)
    stage1 = next(r for r in val if r["stage"] == 1)
    assert {"val_adj_cos", "val_hungarian_acc", "val_eff_rank"} <= set(stage1)
    diag = json.loads((run / "diagnostics.json").read_text())
    assert diag["after"]["adj_cos"] == pytest.approx(stage1["val_adj_cos"])  # the last epoch's, not recomputed
    steps2 = max(r["step"] for r in rows if r["stage"] == 2)
    assert steps2 == 2 * -(-train_rows // 16)  # 2 epochs over every annotation row, batch 16
    scores = json.loads((run / "scores.json").read_text())
    assert scores["num_items"] == report["splits"]["test"]["items"]  # test items stay grouped
    # the synthetic set's kind column survives the fetch: every test item keeps its kind,
    # and its several references stay one group
    refs = [json.loads(x) for x in (run / "references.jsonl").read_text().splitlines()]
    assert all(r.get("kind") for r in refs) and sum(scores["kinds"].values()) == len(refs)
    assert max(len(r["references"]) for r in refs) > 1
