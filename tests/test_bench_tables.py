"""Bench tables as a plugin author reads them: table.tex compiles, deltas and their NaNs
are explained, every scored metric is listed, params per stage, --baseline with
``dist:name`` checked before the first cell, unambiguous cell folders, plugin options as
rows, option validation before any work, and ``bench merge`` over several grids.

The grids here run a fake trainer (``cora_kit.bench.runner.default_trainer`` patched) that
writes what a real cell writes; test_bench_real.py runs the real tiny pipeline.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cora_kit.bench.runner as runner
from cora_kit.bench.grid import Cell, build_grid
from cora_kit.cli import main
from cora_kit.config import to_yaml
from cora_kit.plugin_options import folder_name

KINDS = ("count", "colour", "where")
N_ITEMS = 30


def fake_trainer(calls: list, fail: set[str] = frozenset(), zero: bool = False):
    """A trainer that scores like a real cell: corpus scores, per-item scores (exact-match
    and its kinds, cider, bleu4), meteor without per-item scores, spice unavailable."""

    def train(config, run_dir: Path, cache_dir: Path, stages):
        r, l = config.model.resampler, config.model.loss
        calls.append((r.name, dict(r.options), l.name, dict(l.options), config.seed))
        if r.name in fail or l.name in fail:
            raise RuntimeError("backend 'cuda' unavailable: no CUDA device")
        (run_dir / "config.yaml").write_text(to_yaml(config), encoding="utf-8")
        key = json.dumps([config.model.tiler.name, r.name, l.name, l.options, config.seed], sort_keys=True)
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        p = 0.0 if zero else (0.3 if l.name == "none" else 0.6)
        ids = [f"q{i}" for i in range(N_ITEMS)]
        em = {i: float(rng.random() < p) for i in ids}
        cider = {i: 0.0 if zero else float(rng.random()) for i in ids}
        per_item = {"exact-match": em, "cider": cider, "bleu4": {i: 0.0 if zero else 0.1 for i in ids}}
        for k, kind in enumerate(KINDS):
            per_item[f"exact-match/{kind}"] = {i: em[i] for j, i in enumerate(ids) if j % 3 == k}
        scores = {"bleu4": 0.0 if zero else 0.12, "bleu1": 0.3, "bleu2": 0.2, "bleu3": 0.15,
                  "meteor": 0.0 if zero else 0.2, "cider": float(np.mean(list(cider.values()))),
                  "spice": None, "exact-match": float(np.mean(list(em.values())))}
        for kind in KINDS:
            v = per_item[f"exact-match/{kind}"]
            scores[f"exact-match/{kind}"] = float(np.mean(list(v.values())))
        return {
            "scores": scores,
            "unavailable": {"spice": "unavailable: CoreNLP jars not found"},
            "per_item": per_item,
            "per_item_missing": {"meteor": "no per-item scores for this metric", "spice": "unavailable"},
            "diagnostics": {"adj_cos": 0.9},
            "trainable_params": 3000,
            "trainable_by_stage": {"1": 1000, "2": 3000, "3": 2000},
            "encoder_image_passes": 0,
        }

    return train


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setattr(runner, "default_trainer", fake_trainer(calls))
    return calls


METRICS = ["--set", "eval.metrics=[bleu4, meteor, cider, spice, exact-match]"]


def bench(out: Path, *args: str) -> int:
    return main(["bench", "--preset", "tiny", "--seeds", "2", "--out", str(out), *METRICS, *args])


def grid_2x2(out: Path, *args: str) -> int:
    return bench(out, "--resamplers", "mlp,bimamba", "--losses", "none,densecl", *args)


def tabulars(tex: str) -> list[tuple[int, list[list[str]]]]:
    """(column count of the spec, rows split at unescaped &) of every tabular."""
    out = []
    for m in re.finditer(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", tex, re.S):
        rows = [r.strip() for r in m.group(2).split("\\\\")]
        rows = [re.sub(r"\\hline", "", r).strip() for r in rows]
        cells = [re.split(r"(?<!\\)&", r) for r in rows if r]
        out.append((len(m.group(1)), cells))
    return out


def test_table_tex_is_consistent_and_compiles(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 0
    tex = (out / "table.tex").read_text()
    assert "Δ" not in tex and "±" not in tex  # pdflatex without unicode setup
    assert r"$\Delta$" in tex and r"$\pm$" in tex
    tables = tabulars(tex)
    assert len(tables) == 2  # main table + exact-match per kind
    for n_cols, rows in tables:
        assert len(rows) == 1 + 4  # header + 4 rows
        assert all(len(r) == n_cols for r in rows), [len(r) for r in rows]
    header = tables[0][1][0]
    for needed in ("adj\\_cos", "params S1", "params S2", "params S3", "wall s", "$\\Delta$exact-match [95\\% CI]"):
        assert any(needed in h for h in header), needed
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base)")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"],
        cwd=out, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (out / "table.pdf").stat().st_size > 1000


def test_markdown_has_one_cell_per_header(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 0
    md = (out / "table.md").read_text()
    tables = [b for b in md.split("\n\n") if b.startswith("|")]
    assert len(tables) == 2
    for block in tables:
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1
    assert "exact-match" in tables[0].splitlines()[0]
    assert all(k in tables[1].splitlines()[0] for k in KINDS)


def test_zero_on_both_sides_is_a_zero_delta_and_nan_deltas_are_explained(tmp_path: Path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "default_trainer", fake_trainer(calls, zero=True))
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 0
    table = pd.read_csv(out / "table.csv").set_index(["resampler", "loss"])
    row = table.loc[("bimamba", "densecl")]
    for metric in ("bleu4", "cider", "exact-match"):
        assert row[f"{metric}_mean"] == 0.0
        assert (row[f"{metric}_delta"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == (0.0, 0.0, 0.0)
    assert row["meteor_mean"] == 0.0 and math.isnan(row["meteor_delta"])  # no per-item scores
    md = (out / "table.md").read_text()
    assert re.search(r"- meteor: Δ and CI are NaN: no per-item scores", md)
    assert "- spice: NaN, unavailable" in md
    assert json.loads((out / "table.json").read_text())["footnotes"]


def test_table_json_lists_every_scored_metric_and_params_per_stage(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    assert grid_2x2(out) == 0
    meta = json.loads((out / "table.json").read_text())
    scored = ["bleu4", "bleu1", "bleu2", "bleu3", "meteor", "cider", "spice", "exact-match",
              *(f"exact-match/{k}" for k in KINDS)]
    assert meta["metrics"] == scored
    assert meta["headline_metrics"] == ["bleu4", "meteor", "cider", "spice", "exact-match"]
    assert meta["breakdowns"] == {"exact-match": [f"exact-match/{k}" for k in KINDS]}
    row = meta["rows"][0]
    for m in scored:
        assert f"{m}_mean" in row and f"{m}_std" in row
    assert (row["trainable_params_stage1_mean"], row["trainable_params_stage2_mean"],
            row["trainable_params_stage3_mean"]) == (1000, 3000, 2000)
    assert row["trainable_params_mean"] == 3000  # the largest over stages, kept under its old key
    assert row["exact-match_item_ci_low"] <= row["exact-match_item_mean"] <= row["exact-match_item_ci_high"]


def test_deltas_carry_a_ci_over_seeds_beside_the_ci_over_items(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 0
    table = pd.read_csv(out / "table.csv").set_index(["resampler", "loss"])
    row = table.loc[("bimamba", "densecl")]
    # two seeds: mean ± t(0.975, 1) * sd / sqrt(2) of the per-seed differences of the means
    per_seed = []
    for seed in range(2):
        def em(r: str, l: str) -> float:
            cell = next(p for p in (out / "cells").iterdir() if p.name.endswith(f"{r}__{l}__seed{seed}"))
            return json.loads((cell / "cell.json").read_text())["scores"]["exact-match"]
        per_seed.append(em("bimamba", "densecl") - em("mlp", "none"))
    half = 12.7062 * np.std(per_seed, ddof=1) / np.sqrt(2)
    assert row["exact-match_seed_ci_low"] == pytest.approx(np.mean(per_seed) - half, abs=1e-3)
    assert row["exact-match_seed_ci_high"] == pytest.approx(np.mean(per_seed) + half, abs=1e-3)
    md = (out / "table.md").read_text()
    assert "Δexact-match 95% CI over seeds" in md.splitlines()[0] and "Student-t CI over seeds" in md
    base = table.loc[("mlp", "none")]
    assert base["exact-match_seed_ci_low"] == base["exact-match_seed_ci_high"] == 0.0


@pytest.mark.parametrize("baseline", ["cora-kit:mlp:none", "mlp:cora-kit:none", "cora-kit:mlp:cora-kit:none"])
def test_dist_name_baseline_resolves_to_the_grid_row(tmp_path: Path, trainer: list, baseline: str):
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", baseline) == 0
    table = pd.read_csv(out / "table.csv").set_index(["resampler", "loss"])
    assert table.loc[("mlp", "none"), "exact-match_delta"] == 0.0
    assert table.loc[("mlp", "densecl"), "exact-match_delta"] > 0.0
    assert json.loads((out / "table.json").read_text())["baseline"] == "mlp:none"


@pytest.mark.parametrize(
    "baseline,message",
    [
        ("cora-kit:mlpp:none", "names no row of the grid"),
        ("mlp:vicreg", "names no row of the grid"),
        ("nodist:mlp:none", "names no row"),
        ("mlp", "names no row"),
    ],
)
def test_bad_baseline_is_an_error_before_the_first_cell(tmp_path: Path, trainer: list, capsys, baseline, message):
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", baseline) == 2
    err = capsys.readouterr().err
    assert message in err and baseline in err and "mlp:none" in err
    assert trainer == [] and not out.exists()


def test_a_grid_with_failed_baseline_cells_still_writes_its_table(tmp_path: Path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "default_trainer", fake_trainer(calls, fail={"none"}))
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 1  # some cells failed; tables still written
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 4 and table["exact-match_delta"].isna().all()
    md = (out / "table.md").read_text()
    assert "the baseline mlp:none has no finished cell" in md


def test_cell_folders_are_unambiguous_and_plain_names_readable():
    assert Cell("mlp", "none", 0).cell_id == "mlp__none__seed0"  # unchanged
    assert Cell("cora-kit:mlp", "none", 1).cell_id == "cora-kit+mlp__none__seed1"
    assert Cell("bimamba", "vicreg:variant=pairwise", 0).cell_id == "bimamba__vicreg+variant=pairwise__seed0"
    assert Cell("bimamba", "none", 0, "e2p:num_tiles=8:fov_deg=45").cell_id == (
        "e2p+num_tiles=8+fov_deg=45__bimamba__none__seed0")
    labels = ["a:b", "a-b", "a+b", "a_b", "a__b", "_a", "a_", "a/b", "a b", "a%2Bb", "x:y=1", "x:y=[1, 2]"]
    folders = [folder_name(x) for x in labels]
    assert len(set(folders)) == len(labels)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+%-]+", f) for f in folders)
    assert all("__" not in f for f in folders)
    long = folder_name("vicreg:" + ":".join(f"k{i}=v{i}" for i in range(40)))
    assert len(long) <= 101


def test_loss_options_are_rows_from_flags(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    args = ["--resamplers", "bimamba", "--losses", "vicreg:variant=batchwise,vicreg:variant=pairwise",
            "--baseline", "bimamba:vicreg:variant=batchwise"]
    assert bench(out, *args) == 0
    assert sorted({(c[2], c[3]["variant"]) for c in trainer}) == [("vicreg", "batchwise"), ("vicreg", "pairwise")]
    assert sorted(p.name for p in (out / "cells").iterdir()) == [
        f"bimamba__vicreg+variant={v}__seed{s}" for v in ("batchwise", "pairwise") for s in (0, 1)
    ]
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["loss"]) == ["vicreg:variant=batchwise", "vicreg:variant=pairwise"]
    assert "vicreg:variant=pairwise" in (out / "table.md").read_text()


def test_loss_options_are_rows_from_an_experiment_file(tmp_path: Path, trainer: list):
    exp = tmp_path / "e.yaml"
    exp.write_text(
        "name: variants\nresamplers: [bimamba]\nseeds: 1\n"
        "losses:\n  - vicreg:variant=batchwise\n  - {name: vicreg, options: {variant: pairwise}}\n"
        "baseline: bimamba:vicreg:variant=batchwise\n"
    )
    out = tmp_path / "b"
    assert main(["bench", str(exp), "--preset", "tiny", "--out", str(out), *METRICS]) == 0
    assert sorted(c[3]["variant"] for c in trainer) == ["batchwise", "pairwise"]
    assert len(pd.read_csv(out / "table.csv")) == 2


def test_grid_options_layer_under_cell_options(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    args = ["--resamplers", "bimamba", "--losses", "vicreg:variant=pairwise,vicreg", "--seeds", "1",
            "--loss-opt", "variant=batchwise", "--resampler-opt", "d_state=4"]
    assert bench(out, *args) == 0
    got = sorted((c[3]["variant"], c[1]["d_state"], c[1]["hidden_dim"]) for c in trainer)
    # the cell's own option wins over --loss-opt; the preset's bimamba options survive --resampler-opt
    assert got == [("batchwise", 4, 64), ("pairwise", 4, 64)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--resampler-opt", "hiden_dim=3"], "unknown parameter 'hiden_dim'"),
        (["--losses", "none,vicreg:variant=sideways"], "variant"),
        (["--losses", "none,vicreg:=x"], "key=value"),
        (["--resamplers", "mlp,bimambaa"], "did you mean 'bimamba'"),
        (["--set", "eval.metrics=[cider, ciderr]"], "eval.metrics"),
        (["--set", "seed=3"], "use --seeds"),
        (["--set", "model.loss.name=vicreg"], "use --losses"),
        (["--resamplers", "mlp,cora-kit:mlp"], "same configuration"),
        (["--protocol", "nope"], "--protocol"),
        (["--data", "/no/such/folder"], "--data"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(tmp_path: Path, trainer: list, capsys, args, message):
    out = tmp_path / "b"
    base = {"--resamplers": "mlp,bimamba", "--losses": "none,densecl"}
    flags = [x for k, v in base.items() if k not in args for x in (k, v)]
    assert bench(out, *flags, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) <= 3  # one message (rich may wrap it)
    assert trainer == [] and not out.exists()


def test_bench_merge_is_a_subcommand_and_merges_several_grids(tmp_path: Path, trainer: list, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert bench(a, "--resamplers", "mlp", "--losses", "none,densecl") == 0
    assert bench(b, "--resamplers", "mlp,bimamba", "--losses", "none") == 0  # mlp:none in both
    out = tmp_path / "ab"
    assert main(["bench", "merge", str(a), str(b), "--out", str(out), "--baseline", "mlp:none"]) == 0
    table = pd.read_csv(out / "table.csv").set_index(["resampler", "loss"])
    assert sorted(table.index) == [("bimamba", "none"), ("mlp", "densecl"), ("mlp", "none")]
    assert (table["n_seeds"] == 2).all()  # the shared cell counted once
    meta = json.loads((out / "table.json").read_text())
    assert meta["sources"] == [str(a), str(b)] and any("counted once" in n for n in meta["notes"])
    assert table.loc[("mlp", "densecl"), "exact-match_delta"] > 0
    capsys.readouterr()
    assert main(["bench", "merge", str(a), str(b)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["bench", "merge", str(a)]) == 0  # one folder: tables written into it
    assert (a / "table.md").is_file()
    assert main(["bench", "merge", str(tmp_path / "nope")]) == 2


def test_bench_merge_refuses_one_cell_with_two_settings(tmp_path: Path, trainer: list, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert bench(a, "--resamplers", "mlp", "--losses", "none") == 0
    assert bench(b, "--resamplers", "mlp", "--losses", "none", "--set", "stages.stage2.lr=0.5") == 0
    assert main(["bench", "merge", str(a), str(b), "--out", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "stages.stage2.lr" in err


def test_merged_grids_with_different_shared_settings_are_flagged(tmp_path: Path, trainer: list):
    a, b = tmp_path / "a", tmp_path / "b"
    assert bench(a, "--resamplers", "mlp", "--losses", "none") == 0
    assert bench(b, "--resamplers", "bimamba", "--losses", "none", "--set", "stages.stage2.lr=0.5") == 0
    assert main(["bench", "merge", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    assert "different settings: stages.stage2.lr" in (tmp_path / "ab" / "table.md").read_text()


def test_bench_group_routes_to_run(tmp_path: Path, trainer: list, capsys):
    assert main(["bench"]) == 2
    assert "--resamplers" in capsys.readouterr().err
    assert main(["bench", "run", "--resamplers", "mlp", "--losses", "none", "--seeds", "1",
                 "--out", str(tmp_path / "r")]) == 0
    assert main(["bench", "--help"]) == 0
    assert "merge" in capsys.readouterr().out


def test_shards_keep_the_baseline_check_and_merge(tmp_path: Path, trainer: list):
    out = tmp_path / "b"
    for i in range(2):
        assert grid_2x2(out, "--baseline", "cora-kit:mlp:none", "--shard", f"{i}/2") == 0
    assert not (out / "table.md").exists()
    assert main(["bench", "merge", str(out)]) == 0
    assert json.loads((out / "table.json").read_text())["baseline"] == "mlp:none"


def test_grid_rejects_a_repeated_entry():
    from cora_kit.errors import ConfigError

    with pytest.raises(ConfigError, match="given twice"):
        build_grid(["mlp", "mlp"], ["none"], 1)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_experiments_validate_before_running(path: Path, tmp_path: Path):
    from cora_kit.bench.baseline import resolve_baseline
    from cora_kit.bench.grid import load_experiment
    from cora_kit.bench.runner import BenchSpec, validate_spec

    exp = load_experiment(path)
    cells = exp.cells()
    needs_data = bool((exp.config.get("data") or {}).get("required"))  # paper tables: --data DIR
    data = str(tmp_path) if needs_data else None
    validate_spec(BenchSpec(cells=cells, preset=exp.preset, layers=[exp.config_layer()], data=data))
    if exp.baseline:
        resolve_baseline(exp.baseline, [c.group for c in cells])


def test_a_grid_whose_cells_all_failed_still_writes_tables(tmp_path: Path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "default_trainer", fake_trainer(calls, fail={"mlp", "bimamba"}))
    out = tmp_path / "b"
    assert grid_2x2(out, "--baseline", "mlp:none") == 1
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 4 and (table["n_failed"] == 2).all() and (table["n_seeds"] == 0).all()
    for name in ("table.md", "table.tex", "table.json", "plot.png"):
        assert (out / name).is_file()
    assert len(json.loads((out / "table.json").read_text())["failed_cells"]) == 8


@pytest.mark.parametrize("argv", [["bench", "merge"], ["bench", "--bogus"], ["bench", "--seeds", "x"], ["run", "--bogus"]])
def test_usage_errors_are_one_message_and_exit_2(argv: list[str], capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error:" in err


def test_baseline_per_tiler_or_pinned_to_one_tiler(tmp_path: Path, trainer: list):
    from cora_kit.bench.merge import merge

    out = tmp_path / "b"
    assert bench(out, "--tilers", "e2p,erp-grid", "--resamplers", "mlp", "--losses", "none,densecl",
                 "--baseline", "mlp:none") == 0
    table = pd.read_csv(out / "table.csv").set_index(["tiler", "resampler", "loss"])
    assert table.loc[("erp-grid", "mlp", "none"), "cider_delta"] == 0.0  # its own tiler's row
    merge(out, baseline="e2p:mlp:none")  # a tiler named: every row against that one
    table = pd.read_csv(out / "table.csv").set_index(["tiler", "resampler", "loss"])
    assert table.loc[("erp-grid", "mlp", "none"), "cider_delta"] != 0.0
    spec = json.loads((out / "bench.json").read_text())
    (out / "bench.json").write_text(json.dumps({**spec, "baseline_tiler": "e2p"}))  # a sweep's base tiler
    merge(out)
    meta = json.loads((out / "table.json").read_text())
    assert meta["baseline"] == "e2p:mlp:none" and meta["baseline_tiler"] == "e2p"
