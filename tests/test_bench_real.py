"""The bench grid on the real tiny pipeline: tiler axis, shared cache, resumable."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cora_kit.cli import main


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from cora_kit.data.synth import ensure_synthetic

    out = tmp_path_factory.mktemp("synth") / "d"
    ensure_synthetic(out, n_train=6, n_val=2, n_test=3, size=(64, 128), seed=0)
    return out


FAST = [
    "--set", "stages.stage1.max_steps=1", "--set", "stages.stage2.max_steps=1",
    "--set", "stages.stage3.max_steps=1", "--set", "eval.metrics=[cider]",
    "--set", "model.stitcher.name=nearest-view",
]


def test_tiler_axis_grid_with_shared_cache(tiny_data: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "bench"
    # a dist:name resampler, and a baseline that names the tiler: erp-grid against e2p
    args = ["bench", "--tilers", "e2p,erp-grid", "--resamplers", "cora-kit:mlp", "--losses", "none",
            "--seeds", "1", "--preset", "tiny", "--data", str(tiny_data), "--out", str(out),
            "--baseline", "e2p:mlp:none", *FAST]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "cells").iterdir()) == [
        "e2p__cora-kit+mlp__none__seed0", "erp-grid__cora-kit+mlp__none__seed0"]
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["tiler"]) == ["e2p", "erp-grid"]
    by_tiler = table.set_index("tiler")
    assert by_tiler.loc["e2p", "cider_delta"] == 0.0 and not math.isnan(by_tiler.loc["erp-grid", "cider_delta"])
    assert {"cider_mean", "cider_std", "n_seeds", "adj_cos_mean", "trainable_params_mean"} <= set(table.columns)
    for name in ("table.md", "table.tex", "table.json", "plot.png"):
        assert (out / name).is_file()
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"],
                              cwd=out, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]
    meta = json.loads((out / "table.json").read_text())
    # 11 images + the blank control's 3 (each test scene without its objects), once per
    # tiler (the tiler is part of the cache key)
    assert meta["encoder_image_passes"] == 2 * 14
    first = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/cell.json")}
    assert main(args) == 0  # re-run: every cell is finished, nothing retrains
    assert {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/cell.json")} == first
    assert len(first) == 2
