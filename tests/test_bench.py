"""Bench: aggregation against pandas, bootstrap CI, shards, resumable fault-tolerant grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cora_kit.bench.grid import build_grid, parse_shard, shard_cells
from cora_kit.bench.merge import merge
from cora_kit.bench.runner import BenchSpec, run_grid
from cora_kit.bench.stats import aggregate_seeds, item_bootstrap_ci, paired_bootstrap_ci, per_seed_deltas, seed_t_ci
from cora_kit.errors import ConfigError


def _fixture_cells() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for r in ("mlp", "bimamba"):
        for l in ("none", "densecl"):
            for s in range(3):
                rows.append(
                    {"tiler": "-", "resampler": r, "loss": l, "seed": s, "status": "ok",
                     "cider": float(rng.normal()), "bleu4": float(rng.normal())}
                )
    rows.append({"tiler": "-", "resampler": "mlp", "loss": "none", "seed": 3, "status": "failed",
                 "cider": math.nan, "bleu4": math.nan})
    return pd.DataFrame(rows)


def test_aggregation_matches_pandas():
    cells = _fixture_cells()
    table = aggregate_seeds(cells, ["cider", "bleu4"])
    ref = cells[cells.status == "ok"].groupby(["resampler", "loss"])[["cider", "bleu4"]].agg(["mean", "std"])
    for _, row in table.iterrows():
        for m in ("cider", "bleu4"):
            assert row[f"{m}_mean"] == pytest.approx(ref.loc[(row.resampler, row.loss), (m, "mean")], abs=1e-12)
            assert row[f"{m}_std"] == pytest.approx(ref.loc[(row.resampler, row.loss), (m, "std")], abs=1e-12)
        assert row.n_seeds == 3
    assert table.set_index(["resampler", "loss"]).loc[("mlp", "none"), "n_failed"] == 1


def test_single_seed_std_is_nan():
    cells = _fixture_cells()
    table = aggregate_seeds(cells[cells.seed == 0], ["cider"])
    assert table["cider_std"].isna().all() and (table["n_seeds"] == 1).all()


def test_bootstrap_ci_on_a_known_difference():
    rng = np.random.default_rng(0)
    deltas = 0.5 + rng.normal(0, 1, size=400)
    mean, lo, hi = paired_bootstrap_ci(deltas, n_resamples=4000)
    assert mean == pytest.approx(deltas.mean())
    se = deltas.std(ddof=1) / np.sqrt(deltas.size)
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(mean + 1.96 * se, abs=0.3 * se)
    assert lo > 0  # a real 0.5 difference is detected
    _, lo0, hi0 = paired_bootstrap_ci(rng.normal(0, 1, size=400), n_resamples=4000)
    assert lo0 < 0 < hi0
    assert all(math.isnan(v) for v in paired_bootstrap_ci(np.array([])))


def test_seed_ci_is_students_t_over_the_per_seed_mean_differences():
    """Seeds that disagree: the item CI is narrow, the CI over seeds is not (hand-computed:
    per-seed means 0.1, 0.2, 0.3 -> 0.2 ± t(0.975, 2) * 0.1 / sqrt(3) = 0.2 ± 0.2484)."""
    ids = [f"q{i}" for i in range(40)]
    base = {s: {"em": {i: 0.0 for i in ids}} for s in range(3)}
    cand = {s: {"em": {i: 0.1 * (s + 1) for i in ids}} for s in range(3)}
    per_seed, why = per_seed_deltas(cand, base, "em")
    assert why is None
    (mean, lo, hi), why = seed_t_ci(per_seed)
    assert why is None and mean == pytest.approx(0.2)
    assert (lo, hi) == (pytest.approx(0.2 - 0.24841, abs=1e-4), pytest.approx(0.2 + 0.24841, abs=1e-4))
    _, ilo, ihi = item_bootstrap_ci(per_seed, n_resamples=500)
    assert ilo == ihi == pytest.approx(0.2)  # every item moved by the same seed-mean: no item spread
    (m1, lo1, _), why1 = seed_t_ci(per_seed_deltas({0: cand[0]}, base, "em")[0])
    assert math.isnan(m1) and math.isnan(lo1) and "1 seed" in why1
    none, why_none = per_seed_deltas(cand, {5: base[0]}, "em")
    assert none is None and why_none == "no seed with per-item scores in both rows"


def test_shards_partition_the_grid():
    cells = build_grid(["mlp", "bimamba", "perceiver"], ["none", "vicreg"], 3, tilers=["e2p", "erp-grid"])
    assert len(cells) == 36
    for n in (1, 2, 5, 7, 36, 40):
        shards = [shard_cells(cells, i, n) for i in range(n)]
        ids = [c.cell_id for s in shards for c in s]
        assert sorted(ids) == sorted(c.cell_id for c in cells)  # each exactly once
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def _fake_trainer(calls: list[str], fail: set[str]):
    def train(config, run_dir: Path, cache_dir: Path, stages):
        key = f"{config.model.resampler.name}:{config.model.loss.name}:{config.seed}"
        calls.append(key)
        if config.model.resampler.name in fail:
            raise RuntimeError("backend 'cuda' unavailable: no CUDA device")
        base = 0.2 if config.model.loss.name == "none" else 0.5
        per_item = {f"q{i}": base + 0.01 * ((i + config.seed) % 5) for i in range(50)}
        return {
            "scores": {"cider": float(np.mean(list(per_item.values()))), "spice": None},
            "unavailable": {"spice": "unavailable: CoreNLP jars not found"},
            "per_item": {"cider": per_item},
            "diagnostics": {"adj_cos": 0.9},
            "trainable_params": 123,
            "encoder_image_passes": 0,
        }

    return train


def test_grid_is_resumable_and_fault_tolerant(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = build_grid(["mlp", "broken"], ["none", "densecl"], 2)
    spec = BenchSpec(cells=cells, preset="tiny")
    calls: list[str] = []
    progress = run_grid(spec, tmp_path / "b", trainer=_fake_trainer(calls, {"broken"}))
    assert len(progress.ran) == 4 and len(progress.failed) == 4
    failed_dir = tmp_path / "b" / "cells" / "broken__none__seed0"
    assert "unavailable" in json.loads((failed_dir / "error.json").read_text())["error"]
    assert "Traceback" in (failed_dir / "traceback.txt").read_text()
    calls.clear()
    progress = run_grid(spec, tmp_path / "b", trainer=_fake_trainer(calls, set()))
    assert sorted(progress.skipped) == sorted(c.cell_id for c in cells if c.resampler == "mlp")
    assert len(calls) == 4 and all(c.startswith("broken") for c in calls)  # only the missing cells
    (tmp_path / "b" / "bench.json").write_text(json.dumps({"metrics": ["cider", "spice"]}))
    paths = merge(tmp_path / "b", baseline="mlp:none")
    for name in ("csv", "md", "tex", "json", "plot"):
        assert paths[name].is_file()
    table = pd.read_csv(paths["csv"])
    row = table.set_index(["resampler", "loss"]).loc[("mlp", "densecl")]
    assert row["cider_delta"] == pytest.approx(0.3) and row["cider_ci_low"] == pytest.approx(0.3)
    assert math.isnan(row["spice_mean"])
    assert "CoreNLP" in paths["md"].read_text()


# --- sweeps: a union of one-axis grids around a base setting ----------------------------

SWEEPS = """
name: s
base: {tiler: e2p, resampler: bimamba, loss: densecl}
sweeps:
  - {tilers: [e2p, erp-grid]}
  - {tilers: [erp-global], losses: [none], set: [model.stitcher.name=nearest-view]}
  - {losses: [none, vicreg, densecl]}
  - {resamplers: [mlp, bimamba]}
seeds: 2
baseline: bimamba:none
"""


def _experiment(tmp_path: Path, text: str = SWEEPS):
    from cora_kit.bench.grid import load_experiment

    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path, load_experiment(path)


def test_sweeps_are_the_union_of_one_axis_grids(tmp_path: Path):
    _, exp = _experiment(tmp_path)
    cells = exp.sweep_cells(exp.seeds)
    configs = list(dict.fromkeys((c.tiler, c.resampler, c.loss) for c in cells))
    assert configs == [
        ("e2p", "bimamba", "densecl"), ("erp-grid", "bimamba", "densecl"), ("erp-global", "bimamba", "none"),
        ("e2p", "bimamba", "none"), ("e2p", "bimamba", "vicreg"), ("e2p", "mlp", "densecl"),
    ]  # the base, shared by every sweep, runs once
    assert len(cells) == 12 and len({c.cell_id for c in cells}) == 12
    glob = [c for c in cells if c.tiler == "erp-global"]
    assert all(c.overrides == ("model.stitcher.name=nearest-view",) for c in glob)
    assert all(c.overrides == () for c in cells if c.tiler != "erp-global")
    assert len(exp.sweep_cells(1)) == 6
    assert exp.base_row() == ("e2p", "bimamba", "densecl")


def test_sweep_overrides_reach_only_their_cells_below_the_command_line():
    from cora_kit.bench.grid import Cell
    from cora_kit.bench.runner import cell_config

    spec = BenchSpec(cells=[], preset="tiny", overrides=["eval.batch_size=3"])
    glob = cell_config(spec, Cell("bimamba", "none", 1, "erp-global", ("model.stitcher.name=nearest-view",)))
    assert glob.model.stitcher.name == "nearest-view" and glob.model.tiler.name == "erp-global"
    assert glob.eval.batch_size == 3 and glob.seed == 1
    assert cell_config(spec, Cell("bimamba", "none", 1, "e2p")).model.stitcher.name == "stride-views"
    # --set on the command line wins over a sweep's set
    spec = BenchSpec(cells=[], preset="tiny", overrides=["model.stitcher.name=concat"])
    assert cell_config(spec, Cell("bimamba", "none", 1, "erp-global", ("model.stitcher.name=nearest-view",))
                       ).model.stitcher.name == "concat"


@pytest.mark.parametrize(
    "text,needle",
    [
        (SWEEPS + "resamplers: [mlp]\n", "either resamplers/losses/tilers"),
        ("name: s\nbase: {resampler: mlp, loss: none}\nseeds: 1\n", "sweeps need a base setting"),
        ("name: s\nbase: {resampler: mlp, loss: none}\nsweeps: [{tilers: [e2p]}]\n", "needs base.tiler"),
        ("name: s\nbase: {resampler: mlp, loss: none}\nsweeps: [{set: [a=1]}]\n", "varies at least one"),
        ("name: s\nlosses: [none]\n", "needs resamplers and losses"),
    ],
)
def test_bad_experiment_files_name_the_problem(tmp_path: Path, text: str, needle: str):
    from cora_kit.bench.grid import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_experiment(path)


def test_conflicting_overrides_for_one_configuration(tmp_path: Path):
    _, exp = _experiment(tmp_path, "name: c\nbase: {tiler: e2p, resampler: mlp, loss: none}\nsweeps:\n"
                                   "  - {losses: [none], set: [a.b=1]}\n  - {resamplers: [mlp, bimamba]}\n")
    with pytest.raises(ConfigError, match=r"sweep 2 gives e2p:mlp:none the set \[\], an earlier sweep \['a.b=1'\]"):
        exp.sweep_cells(1)


def test_sweep_bench_runs_every_configuration_once_with_the_baseline_at_the_base_tiler(tmp_path: Path, monkeypatch):
    """``cora-kit bench SWEEPS.yaml``: the cells of the union, bench.json names the base and
    pins the baseline to the base's tiler, and every row's delta is against e2p:bimamba:none."""
    import cora_kit.bench.runner as runner
    from cora_kit.cli import main

    monkeypatch.chdir(tmp_path)
    path, _ = _experiment(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(runner, "default_trainer", _fake_trainer(calls, set()))
    assert main(["bench", str(path), "--out", str(tmp_path / "b"), "--set", "eval.metrics=[cider]"]) == 0
    assert len(calls) == 12
    meta = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert meta["base"] == {"tiler": "e2p", "resampler": "bimamba", "loss": "densecl"}
    assert meta["baseline"] == "e2p:bimamba:none" and meta["baseline_tiler"] == "e2p"
    cell = json.loads((tmp_path / "b" / "cells" / "erp-global__bimamba__none__seed0" / "cell.json").read_text())
    assert cell["cell"]["overrides"] == ["model.stitcher.name=nearest-view"]
    table = pd.read_csv(tmp_path / "b" / "table.csv").set_index(["tiler", "resampler", "loss"])
    assert len(table) == 6
    # loss none scores 0.2, the others 0.5
    assert table.loc[("erp-grid", "bimamba", "densecl"), "cider_delta"] == pytest.approx(0.3)
    assert table.loc[("erp-global", "bimamba", "none"), "cider_delta"] == pytest.approx(0.0)
    assert table.loc[("e2p", "bimamba", "none"), "cider_delta"] == pytest.approx(0.0)
    assert json.loads((tmp_path / "b" / "table.json").read_text())["baseline_tiler"] == "e2p"


def test_sweep_flags_and_axis_keys_are_refused_before_any_cell(tmp_path: Path, capsys, monkeypatch):
    import cora_kit.bench.runner as runner
    from cora_kit.cli import main

    calls: list[str] = []
    monkeypatch.setattr(runner, "default_trainer", _fake_trainer(calls, set()))
    path, _ = _experiment(tmp_path)
    assert main(["bench", str(path), "--losses", "none", "--out", str(tmp_path / "b")]) == 2
    assert "defines sweeps" in capsys.readouterr().err
    path, _ = _experiment(tmp_path, SWEEPS.replace("set: [model.stitcher.name=nearest-view]",
                                                   "set: [model.loss.name=vicreg]"))
    assert main(["bench", str(path), "--out", str(tmp_path / "b")]) == 2
    assert "'model.loss.name' is an axis of the grid" in capsys.readouterr().err
    assert calls == []


def test_shipped_claims_experiment_is_7_configurations_by_3_seeds():
    from cora_kit.bench.grid import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "synth-claims.yaml")
    cells = exp.sweep_cells(exp.seeds)
    configs = {(c.tiler, c.resampler, c.loss) for c in cells}
    assert len(cells) == 21 and len(configs) == 7
    base = ("e2p", "bimamba", "densecl")
    assert exp.base_row() == base
    assert ("e2p", "bimamba", "none") in configs and exp.baseline == "bimamba:none" and exp.preset == "tiny"
    assert all(sum(a != b for a, b in zip(c, base)) == 1 for c in configs - {base, ("erp-global", "bimamba", "none")})
