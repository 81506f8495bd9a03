"""Build the bench tables from every finished cell (``cora-kit bench merge``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cora_kit.bench import report
from cora_kit.bench.stats import aggregate_seeds, paired_bootstrap_ci
from cora_kit.errors import CoraKitError

DIAGNOSTIC_KEYS = ("adj_cos", "adj_mse", "overlap_ret_acc", "hungarian_acc", "feat_std", "eff_rank", "r_eff_rank")


def load_cell_records(bench_dir: Path) -> list[dict[str, Any]]:
    """Every cell's ``cell.json`` (finished) or ``error.json`` (failed)."""
    cells_root = bench_dir / "cells"
    if not cells_root.is_dir():
        raise CoraKitError(f"no cells under {cells_root}: is {bench_dir} a bench folder?")
    records = []
    for cell_dir in sorted(p for p in cells_root.iterdir() if p.is_dir()):
        for name in ("cell.json", "error.json"):
            path = cell_dir / name
            if path.is_file():
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise CoraKitError(f"{path}: not valid JSON ({exc})") from None
                record["cell_dir"] = str(cell_dir)
                records.append(record)
                break
    return records


def cells_frame(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per cell: group columns, seed, status, metrics, diagnostics, params, time."""
    rows = []
    for rec in records:
        cell = rec.get("cell", {})
        row: dict[str, Any] = {
            "tiler": cell.get("tiler") or "-",
            "resampler": cell.get("resampler"),
            "loss": cell.get("loss"),
            "seed": cell.get("seed"),
            "status": rec.get("status", "failed"),
            "error": rec.get("error"),
            "wall_time_s": rec.get("wall_time_s", math.nan),
            "trainable_params": rec.get("trainable_params", math.nan),
        }
        scores = rec.get("scores", {}) or {}
        for m in metrics:
            value = scores.get(m)
            row[m] = math.nan if value is None else float(value)
        diags = rec.get("diagnostics", {}) or {}
        for key in DIAGNOSTIC_KEYS:
            value = diags.get(key)
            row[key] = math.nan if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def unavailable_reasons(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for rec in records:
        for metric, reason in (rec.get("unavailable") or {}).items():
            reasons.setdefault(metric, reason)
    return reasons


def add_baseline_deltas(
    table: pd.DataFrame,
    records: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    baseline: str,
    n_resamples: int = 10_000,
    baseline_tiler: str | None = None,
) -> pd.DataFrame:
    """``<metric>_delta``, ``_ci_low``, ``_ci_high``: paired difference to ``baseline``
    (``resampler:loss``) over the same test items and seeds, 95% bootstrap CI over items.
    The baseline is taken at each row's tiler, or at ``baseline_tiler`` when given (sweeps
    around a base setting: one baseline cell for every row).

    Uses per-item scores (``per_item`` in cell.json): the mean of per-item scores, which
    for CIDEr equals the corpus score and for BLEU is the sentence-level mean.
    """
    try:
        base_res, base_loss = baseline.split(":", 1)
    except ValueError:
        raise CoraKitError(f"--baseline must look like resampler:loss; got {baseline!r}") from None
    by_group: dict[tuple[str, str, str], dict[int, Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        c = rec["cell"]
        by_group.setdefault((c.get("tiler") or "-", c["resampler"], c["loss"]), {})[c["seed"]] = rec
    table = table.copy()
    for metric in metrics:
        deltas, lows, highs = [], [], []
        for _, row in table.iterrows():
            tiler = row.get("tiler", "-")
            base_at = baseline_tiler or tiler
            base = by_group.get((base_at, base_res, base_loss), {})
            cand = by_group.get((tiler, row["resampler"], row["loss"]), {})
            if not base:
                raise CoraKitError(f"baseline {baseline!r} has no finished cell for tiler {base_at!r}")
            per_seed = []
            for seed in sorted(set(base) & set(cand)):
                b = (base[seed].get("per_item") or {}).get(metric)
                c = (cand[seed].get("per_item") or {}).get(metric)
                if not b or not c:
                    continue
                ids = sorted(set(b) & set(c))
                per_seed.append(np.array([c[i] - b[i] for i in ids], dtype=np.float64))
            if not per_seed or len({len(d) for d in per_seed}) != 1:
                deltas.append(math.nan)
                lows.append(math.nan)
                highs.append(math.nan)
                continue
            mean, lo, hi = paired_bootstrap_ci(np.mean(per_seed, axis=0), n_resamples)
            deltas.append(mean)
            lows.append(lo)
            highs.append(hi)
        table[f"{metric}_delta"] = deltas
        table[f"{metric}_ci_low"] = lows
        table[f"{metric}_ci_high"] = highs
    return table


def merge(
    bench_dir: Path,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    console: Any = None,
) -> dict[str, Path]:
    """Aggregate finished cells into table.{csv,md,tex,json} and plot.png."""
    records = load_cell_records(bench_dir)
    if not records:
        raise CoraKitError(f"no finished or failed cells under {bench_dir / 'cells'}")
    spec_path = bench_dir / "bench.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    if metrics is None:
        metrics = spec.get("metrics") or sorted(
            {m for r in records for m in (r.get("scores") or {})}
        )
    baseline = baseline or spec.get("baseline")
    frame = cells_frame(records, metrics)
    values = list(metrics) + list(DIAGNOSTIC_KEYS) + ["trainable_params", "wall_time_s"]
    table = aggregate_seeds(frame, values)
    if baseline:
        table = add_baseline_deltas(table, records, metrics, baseline, baseline_tiler=spec.get("baseline_tiler"))
    unavailable = unavailable_reasons(records)
    failures = {
        Path(r["cell_dir"]).name: r.get("error", "") for r in records if r.get("status") != "ok"
    }
    meta = {
        "metrics": list(metrics),
        "baseline": baseline,
        "baseline_tiler": spec.get("baseline_tiler"),
        "failed_cells": failures,
        "encoder_image_passes": int(sum(r.get("encoder_image_passes", 0) or 0 for r in records)),
        "cache_hits": int(sum(r.get("cache_hits", 0) or 0 for r in records)),
        "versions": spec.get("versions", {}),
    }
    paths = report.write_tables(table, bench_dir, metrics, unavailable, meta)
    paths["plot"] = report.plot(table, metrics, bench_dir / "plot.png")
    report.print_table(table, metrics, unavailable, console)
    if console is not None:
        console.print(
            f"frozen encoder: {meta['encoder_image_passes']} image passes for {len(records)} cell(s), "
            f"{meta['cache_hits']} cache hits (shared cache: {bench_dir / 'feature_cache'})",
            highlight=False,
        )
        for cell, error in failures.items():
            console.print(f"[red]failed[/] {cell}: {error}", highlight=False)
    return paths
