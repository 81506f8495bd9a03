"""``cora-kit bench --jobs N``: the shards in N processes, then one table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cora_kit.bench import parallel
from cora_kit.cli import main


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cora_kit.data.synth import ensure_synthetic

    out = tmp_path_factory.mktemp("synth") / "d"
    ensure_synthetic(out, n_train=6, n_val=2, n_test=3, size=(64, 128), seed=0)
    return out


FAST = ["--set", "stages.stage1.max_steps=1", "--set", "stages.stage2.max_steps=1",
        "--set", "stages.stage3.max_steps=1", "--set", "eval.metrics=[cider]",
        "--set", "eval.controls=[]"]


def test_two_jobs_run_every_cell_once_and_write_one_table(tiny_data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    args = ["bench", "--resamplers", "mlp", "--losses", "none", "--seeds", "2", "--preset", "tiny",
            "--data", str(tiny_data), "--out", str(out), *FAST]
    assert main([*args, "--jobs", "2"]) == 0
    said = capsys.readouterr().out
    assert "2 jobs x" in said and "2 of 2 cell(s) finished" in said
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["mlp__none__seed0", "mlp__none__seed1"]
    logs = sorted(p.name for p in (out / "jobs").iterdir())
    assert logs == ["shard-0-of-2.log", "shard-1-of-2.log"]
    # each job ran its own shard: one cell each, none twice
    texts = [(out / "jobs" / name).read_text() for name in logs]
    assert all("1 cell(s)" in t and "ran 1," in t for t in texts), texts
    table = pd.read_csv(out / "table.csv")
    assert table["n_seeds"].tolist() == [2]
    assert (out / "table.md").is_file()
    assert main([*args, "--jobs", "2"]) == 0  # resumable: every cell is finished, the table is rebuilt


def test_jobs_and_shard_together_are_refused(tiny_data: Path, tmp_path: Path) -> None:
    args = ["bench", "--resamplers", "mlp", "--losses", "none", "--seeds", "1", "--preset", "tiny",
            "--data", str(tiny_data), "--out", str(tmp_path / "b"), "--jobs", "2", "--shard", "0/2"]
    assert main(args) == 2
    assert not (tmp_path / "b").exists()


def test_each_job_gets_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "cores", lambda: 16)
    assert parallel.job_env(4)["OMP_NUM_THREADS"] == "4"
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    assert parallel.job_env(3)["OMP_NUM_THREADS"] == "1"
