"""Experiment trackers: a real (fake-model) run logs to TensorBoard, W&B (offline) and
MLflow (local SQLite); each is read back with its own library or file format and must
hold the same values as metrics.jsonl. A missing tracker library is a one-line error."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from cora_kit.errors import ConfigError
from cora_kit.train import trackers as tr
from cora_kit.train.engine import run
from test_train_fake import fake_factory, make_splits, tiny_config


def _run(tmp_path: Path, loggers: list[str], **extra: Any) -> Path:
    sets = {"logging.loggers": json.dumps(loggers), **extra}
    cfg = tiny_config(**sets)
    out = tmp_path / "runs" / "r1"
    run(cfg, out, splits=make_splits(16, 4, 4), model_factory=fake_factory,
        feature_cache_dir=tmp_path / "cache", progress=False)
    return out


def _jsonl(out: Path, validation: bool = False) -> list[dict[str, Any]]:
    """The training rows of metrics.jsonl (``validation``: the epoch-end validation rows)."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if ("loss" in r) != validation]


def test_tensorboard_events_read_back_equal_metrics_jsonl(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _run(tmp_path, ["tensorboard"])
    rows = _jsonl(out)
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for stage in (1, 2, 3):
        expected = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
        got = [(e.step, e.value) for e in acc.Scalars(f"stage{stage}/loss")]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in the file
    assert "stage2/lr" in tags and "stage1/overlap_loss" in tags
    for r in _jsonl(out, validation=True):  # the epoch-end validation reaches the tracker too
        key = "val_loss" if "val_loss" in r else "val_adj_cos"
        (event,) = [e for e in acc.Scalars(f"stage{r['stage']}/{key}") if e.step == r["step"]]
        assert event.value == pytest.approx(r[key], rel=1e-6)
    scores = json.loads((out / "scores.json").read_text())
    assert acc.Scalars("test/panorama/cider")[0].value == pytest.approx(scores["panorama"]["cider"], rel=1e-6)
    assert "test/blank/cider" in tags


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B transaction log (.wandb): a 7-byte header, then
    LevelDB-log framing (32 KiB blocks; records: crc32, uint16 length, type; FULL=1,
    FIRST=2, MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def test_wandb_offline_run_holds_every_logged_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    out = _run(tmp_path, ["wandb"], **{"logging.wandb_mode": "offline"})
    logs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1, list((out / "wandb").rglob("*"))
    history: list[dict[str, float]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for rec in _wandb_records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
        elif kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates})
    rows = _jsonl(out)
    for stage in (1, 2, 3):
        expected = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
        got = [(h[f"stage{stage}/step"], h[f"stage{stage}/loss"]) for h in history if f"stage{stage}/loss" in h]
        assert got == expected
    scores = json.loads((out / "scores.json").read_text())
    assert summary["test/panorama/cider"] == pytest.approx(scores["panorama"]["cider"])
    assert config["model"]["resampler"]["name"] == "bimamba"  # the resolved config


def test_mlflow_local_store_holds_metric_history_and_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = _run(tmp_path, ["mlflow"], **{"logging.project": "cora-test"})
    uri = tr.default_mlflow_uri(out)
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cora-test")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_name == "r1" and found.info.status == "FINISHED"
    rows = _jsonl(out)
    for stage in (1, 2, 3):
        expected = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
        hist = client.get_metric_history(found.info.run_id, f"stage{stage}/loss")
        assert sorted((m.step, m.value) for m in hist) == expected
    assert found.data.params["model.resampler.name"] == "bimamba"
    scores = json.loads((out / "scores.json").read_text())
    assert found.data.metrics["test/panorama/cider"] == pytest.approx(scores["panorama"]["cider"])


def test_a_failing_run_marks_the_tracker_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def broken(config: Any, device: Any) -> Any:
        raise RuntimeError("model build failed")

    cfg = tiny_config(**{"logging.loggers": '["mlflow"]'})
    with pytest.raises(RuntimeError, match="model build failed"):
        run(cfg, tmp_path / "runs" / "bad", splits=make_splits(8, 2, 2), model_factory=broken,
            feature_cache_dir=tmp_path / "cache", progress=False)
    client = MlflowClient(tracking_uri=tr.default_mlflow_uri(tmp_path / "runs" / "bad"))
    (found,) = client.search_runs([client.get_experiment_by_name("cora-kit").experiment_id])
    assert found.info.status == "FAILED"


def test_missing_tracker_library_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = tiny_config(**{"logging.loggers": '["jsonl", "wandb"]'})
    with pytest.raises(tr.TrackerError, match=r'--logger wandb needs .*wandb.*pip install "cora-kit\[wandb\]"'):
        run(cfg, tmp_path / "runs" / "r", splits=make_splits(8, 2, 2), model_factory=fake_factory,
            feature_cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "runs" / "r" / "stage1").exists()  # nothing trained


def test_cli_logger_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from cora_kit.cli import main
    from cora_kit.commands.run import parse_loggers

    assert parse_loggers(["tensorboard,wandb", "mlflow", "wandb"]) == ["jsonl", "tensorboard", "wandb", "mlflow"]
    with pytest.raises(ConfigError, match="--logger 'neptune'"):
        parse_loggers(["neptune"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "--logger", "mlflow", "--set", "data.synth.n_train=2", "--out", str(tmp_path / "runs")])
    assert rc == 2
    assert not (tmp_path / "data").exists()  # refused before generating data


def test_scalars_and_final_values() -> None:
    row = {"stage": 2, "step": 5, "epoch": 0, "loss": 1.5, "lr": 1e-3, "bad": float("nan"), "name": "x", "ok": True}
    assert tr.scalars(row) == {"stage2/epoch": 0.0, "stage2/loss": 1.5, "stage2/lr": 1e-3}
    values = tr.final_values(
        {"split": "test", "panorama": {"cider": 0.5, "spice": float("nan"), "unavailable": {"spice": "no jars"}}},
        {"before": {"adj_cos": 0.1}, "after": {"adj_cos": 0.9, "note": "x"}},
    )
    assert values == {"test/panorama/cider": 0.5, "diagnostics/before/adj_cos": 0.1, "diagnostics/after/adj_cos": 0.9}
