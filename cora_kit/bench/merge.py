"""Build the bench tables from the finished cells of one or more grids (``cora-kit bench merge``).

Outputs (``report.write_tables`` / ``plot.plot``): ``table.{csv,md,tex,json}`` and
``plot.png``. Columns per row (tiler x resampler x loss, over seeds): ``<metric>_mean``,
``<metric>_std`` for every metric any cell scored; ``<metric>_item_mean``,
``<metric>_item_ci_low``, ``<metric>_item_ci_high`` (mean of the seed-averaged per-item
scores and its 95% bootstrap CI over items) where per-item scores exist; with a baseline,
``<metric>_delta``, ``<metric>_ci_low``, ``<metric>_ci_high`` (paired, 95% CI over items, see
``stats.item_bootstrap_ci``) and ``<metric>_seed_ci_low``, ``<metric>_seed_ci_high`` (95% CI over
seeds, ``stats.seed_t_ci``); the Stage-1 diagnostics; ``trainable_params_stage<k>`` and
``trainable_params`` (the largest over the stages); ``wall_time_s``; ``n_seeds``, ``n_failed``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape

from cora_kit.bench import plot, report
from cora_kit.bench.baseline import Baseline, Row, resolve_baseline
from cora_kit.bench.stats import (
    SeedItems, aggregate_seeds, item_bootstrap_ci, paired_bootstrap_ci, per_seed_deltas, seed_averaged_items, seed_t_ci,
)
from cora_kit.errors import ConfigError, CoraKitError

DIAGNOSTIC_KEYS = ("adj_cos", "adj_mse", "overlap_ret_acc", "hungarian_acc", "feat_std", "eff_rank", "r_eff_rank")
STAGES = (1, 2, 3)
#: config keys that may differ between cells of one table without making rows incomparable
_RUN_ONLY_KEYS = ("device", "data.num_workers", "eval.batch_size")


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


def row_of(record: Mapping[str, Any]) -> Row:
    cell = record.get("cell", {})
    return (cell.get("tiler") or None, cell["resampler"], cell["loss"])


def _flat_config(cell_dir: str) -> dict[str, Any] | None:
    """The cell's resolved ``config.yaml`` as ``{dotted.key: value}`` (None if absent)."""
    import yaml

    path = Path(cell_dir) / "config.yaml"
    if not path.is_file():
        return None
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, "")
    return {k: v for k, v in out.items() if not k.startswith(_RUN_ONLY_KEYS)}


def _shared(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that are not the row's own (axes: plugins + their options, seed)."""
    axes = ("seed", "model.resampler.", "model.loss.", "model.tiler.")
    return {k: v for k, v in flat.items() if not k.startswith(axes) and k != "seed"}


@dataclass
class Combined:
    """The cells of one table, gathered from one or more bench folders."""

    records: list[dict[str, Any]]
    specs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def combine(bench_dirs: Sequence[Path]) -> Combined:
    """Cells of every folder; a cell found twice with the same settings counts once, with
    other settings it is a ConfigError naming both folders and the first differing key."""
    chosen: dict[tuple[Row, int], dict[str, Any]] = {}
    configs: dict[str, dict[str, Any] | None] = {}
    specs, notes, twice = [], [], []
    for bench_dir in bench_dirs:
        spec_path = bench_dir / "bench.json"
        specs.append(json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else {})
        for rec in load_cell_records(bench_dir):
            key = (row_of(rec), int(rec["cell"]["seed"]))
            configs[rec["cell_dir"]] = _flat_config(rec["cell_dir"])
            first = chosen.get(key)
            if first is None:
                chosen[key] = rec
                continue
            a, b = configs[first["cell_dir"]], configs[rec["cell_dir"]]
            differ = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
            if differ and a is not None and b is not None:
                raise ConfigError(
                    f"{first['cell_dir']} and {rec['cell_dir']} are the same cell with different settings"
                    f" ({differ[0]}: {a.get(differ[0])!r} vs {b.get(differ[0])!r}); merge grids that agree"
                )
            if first.get("status") != "ok" and rec.get("status") == "ok":
                chosen[key] = rec  # a finished copy beats a failed one
            twice.append(Path(rec["cell_dir"]).name)
    if twice:
        notes.append(f"{len(twice)} cell(s) found in more than one folder, counted once: "
                     + ", ".join(sorted(set(twice))[:6]) + (" ..." if len(set(twice)) > 6 else ""))
    shared = [(r["cell_dir"], _shared(configs[r["cell_dir"]] or {})) for r in chosen.values()
              if configs[r["cell_dir"]] is not None]
    if shared:
        keys = sorted({k for _, s in shared for k in s})
        differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for _, s in shared}) > 1]
        if differ:
            notes.append("rows were trained with different settings: " + ", ".join(differ[:8])
                         + (" ..." if len(differ) > 8 else ""))
    return Combined(list(chosen.values()), specs, notes)


def metric_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every metric key any cell scored, in scoring order."""
    keys: dict[str, None] = {}
    for rec in records:
        for key in rec.get("scores") or {}:
            keys.setdefault(key, None)
    return list(keys)


def headline_metrics(keys: Sequence[str], requested: Sequence[str]) -> list[str]:
    """The keys shown in table.md/tex, the terminal and the plot: the keys of the metrics
    asked for (``eval.metrics``) and every key the registry knows as a metric name or alias.
    ``<metric>/<kind>`` keys get their own per-kind table (``breakdowns``); the rest
    (``bleu1``..``bleu3``) stay in table.csv/json only."""
    from cora_kit.registry import REGISTRY

    names = set(requested) | {n.replace("-", "_") for n in requested}
    try:
        for spec in REGISTRY.specs("metric"):
            names |= {spec.name, spec.name.replace("-", "_"), *spec.aliases}
    except CoraKitError:
        pass
    return [k for k in keys if k in names]


def breakdowns(keys: Sequence[str], headline: Sequence[str]) -> dict[str, list[str]]:
    """``{metric: [metric/<part>, ...]}``: per-kind columns (``exact-match/count``)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        parent, sep, _ = key.partition("/")
        if sep and parent in headline:
            out.setdefault(parent, []).append(key)
    return out


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
        by_stage = rec.get("trainable_by_stage") or {}
        for k in STAGES:
            row[f"trainable_params_stage{k}"] = by_stage.get(str(k), math.nan)
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


def _items_by_row(records: Sequence[Mapping[str, Any]]) -> dict[Row, dict[int, Mapping[str, Mapping[str, float]]]]:
    out: dict[Row, dict[int, Mapping[str, Mapping[str, float]]]] = {}
    for rec in records:
        if rec.get("status") == "ok":
            out.setdefault(row_of(rec), {})[int(rec["cell"]["seed"])] = rec.get("per_item") or {}
    return out


def _table_row(row: Mapping[str, Any]) -> Row:
    tiler = row.get("tiler", "-")
    return (None if tiler in ("-", None) else tiler, row["resampler"], row["loss"])


def no_item_reasons(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, str]:
    """Why a metric has no per-item scores (so no CI and no delta)."""
    reasons: dict[str, str] = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        missing = rec.get("per_item_missing") or {}
        per_item = rec.get("per_item") or {}
        for m in metrics:
            if m not in per_item:
                why = missing.get(m) or "no per-item scores recorded for this metric"
                reasons.setdefault(m, f"Δ and CI are NaN: {why} (both need one score per test item)")
    return reasons


def add_item_cis(table: pd.DataFrame, items: Mapping[Row, SeedItems], metrics: Sequence[str]) -> pd.DataFrame:
    """``<metric>_item_mean``, ``_item_ci_low``, ``_item_ci_high`` per row (95%, over items)."""
    table = table.copy()
    for metric in metrics:
        cols: list[list[float]] = [[], [], []]
        for _, row in table.iterrows():
            values, _ = seed_averaged_items(items.get(_table_row(row), {}), metric)
            stats = paired_bootstrap_ci(values) if values is not None else (math.nan,) * 3
            for col, v in zip(cols, stats):
                col.append(v)
        for suffix, col in zip(("item_mean", "item_ci_low", "item_ci_high"), cols):
            table[f"{metric}_{suffix}"] = col
    return table


def add_baseline_deltas(
    table: pd.DataFrame,
    items: Mapping[Row, SeedItems],
    metrics: Sequence[str],
    baseline: Baseline,
    n_resamples: int = 10_000,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``<metric>_delta``, ``_ci_low``, ``_ci_high`` (over items) and ``_seed_ci_low``,
    ``_seed_ci_high`` (over seeds) against the baseline row; returns the
    table and ``{what: why}`` for every delta left NaN where per-item scores exist
    (metrics without them are explained by ``no_item_reasons``)."""
    table = table.copy()
    rows = list(items) + [_table_row(r) for _, r in table.iterrows()]
    reasons: dict[str, str] = {}
    for metric in metrics:
        cols: list[list[float]] = [[], [], [], [], []]
        for _, row in table.iterrows():
            me = _table_row(row)
            base = baseline.row_for(me, rows)
            stats: tuple[float, float, float] = (math.nan,) * 3
            seed_stats: tuple[float, float, float] = (math.nan,) * 3
            if base is None:
                reasons.setdefault(
                    f"Δ at tiler {me[0]}",
                    f"NaN: the grid has no baseline row {baseline.label} at tiler {me[0]}"
                    " (name one with --baseline TILER:RESAMPLER:LOSS)",
                )
            elif not items.get(base):
                reasons.setdefault("Δ", f"NaN: the baseline {baseline.label} has no finished cell")
            else:
                mine = items.get(me, {})
                per_seed, why = per_seed_deltas(mine, items[base], metric)
                if per_seed is None:
                    if any(mine[s].get(metric) for s in mine):
                        label = ":".join(p for p in me if p)
                        reasons.setdefault(f"Δ{metric} of {label}", f"NaN: {why}")
                else:
                    stats = item_bootstrap_ci(per_seed, n_resamples)
                    seed_stats, seed_why = seed_t_ci(per_seed)
                    if seed_why and me != base and not math.isnan(stats[0]):
                        reasons.setdefault("Δ CI over seeds", f"NaN where a row has {seed_why}")
            for col, v in zip(cols, (*stats, *seed_stats[1:])):
                col.append(v)
        for suffix, col in zip(("delta", "ci_low", "ci_high", "seed_ci_low", "seed_ci_high"), cols):
            table[f"{metric}_{suffix}"] = col
    return table, reasons


def _baseline_from(
    text: str | None, records: Sequence[Mapping[str, Any]], strict: bool, tiler: str | None = None
) -> tuple[Baseline | None, str | None]:
    """Resolve ``text`` against the rows; ``tiler`` (a sweep's base tiler, ``baseline_tiler``
    in bench.json) pins a baseline that names none to that tiler's row."""
    if not text:
        return None, None
    rows = [row_of(r) for r in records]
    try:
        found = resolve_baseline(text, rows)
        if tiler and not found.tiler_given:
            found = resolve_baseline(f"{tiler}:{found.label}", rows)
        return found, None
    except ConfigError as exc:
        if strict:
            raise
        return None, str(exc)


def _baselines(text: str | None, combined: Combined) -> tuple[Baseline | None, str | None]:
    """The baseline to use and, when the grids' own one cannot be used, why not."""
    tilers = sorted({s["baseline_tiler"] for s in combined.specs if s.get("baseline_tiler")})
    tiler = tilers[0] if len(tilers) == 1 else None
    if text:
        return _baseline_from(text, combined.records, strict=True, tiler=tiler)
    named = sorted({s["baseline"] for s in combined.specs if s.get("baseline")})
    if len(named) > 1:
        return None, f"the grids name different baselines ({', '.join(named)}): pass --baseline"
    return _baseline_from(named[0] if named else None, combined.records, strict=False, tiler=tiler)


def build_view(combined: Combined, requested: Sequence[str], baseline: Baseline | None,
               baseline_problem: str | None) -> report.TableView:
    """Aggregate the cells into the rows, CIs and deltas the tables show."""
    records = combined.records
    metrics = metric_keys(records)
    headline = headline_metrics(metrics, requested) or metrics
    parts = breakdowns(metrics, headline)
    values = [*metrics, *DIAGNOSTIC_KEYS, "trainable_params", *(f"trainable_params_stage{k}" for k in STAGES), "wall_time_s"]
    table = aggregate_seeds(cells_frame(records, metrics), values)
    items = _items_by_row(records)
    item_metrics = [m for m in metrics if any(m in (p or {}) for r in items.values() for p in r.values())]
    table = add_item_cis(table, items, item_metrics)
    shown = headline + [k for keys in parts.values() for k in keys]
    notes = no_item_reasons(records, shown)
    if baseline is not None:
        table, delta_notes = add_baseline_deltas(table, items, list(dict.fromkeys(shown + item_metrics)), baseline)
        notes.update(delta_notes)
    if baseline_problem:
        notes["baseline"] = f"no deltas: {baseline_problem}"
    return report.TableView(table, headline, parts, unavailable_reasons(records), notes, combined.notes,
                            baseline=baseline.label if baseline else None)


def merge(
    bench_dirs: Path | Sequence[Path],
    out: Path | None = None,
    requested: Sequence[str] | None = None,
    baseline: str | None = None,
    console: Any = None,
) -> dict[str, Path]:
    """Aggregate finished cells into table.{csv,md,tex,json} and plot.png under ``out``
    (default: the only bench folder). An explicit ``baseline`` that names no row is a
    ConfigError before anything is written; the grid's own (``bench.json``) baseline
    failing leaves the deltas out with a note, never the table."""
    dirs = [bench_dirs] if isinstance(bench_dirs, Path) else list(bench_dirs)
    if not dirs:
        raise ConfigError("bench merge needs at least one bench folder")
    if out is None and len(dirs) > 1:
        raise ConfigError("merging several bench folders needs --out OUT")
    out = out or dirs[0]
    combined = combine(dirs)
    records = combined.records
    if not records:
        raise CoraKitError(f"no finished or failed cells under {', '.join(str(d / 'cells') for d in dirs)}")
    resolved, problem = _baselines(baseline, combined)
    requested = list(requested or [m for s in combined.specs for m in s.get("metrics") or []])
    view = build_view(combined, requested, resolved, problem)
    failures = {Path(r["cell_dir"]).name: r.get("error", "") for r in records if r.get("status") != "ok"}
    meta = {
        "metrics": metric_keys(records),
        "headline_metrics": view.headline,
        "breakdowns": dict(view.parts),
        "baseline": view.baseline,
        "baseline_tiler": resolved.tiler if resolved and resolved.tiler_given else None,
        "sources": [str(d) for d in dirs],
        "failed_cells": failures,
        "notes": combined.notes,
        "encoder_image_passes": int(sum(r.get("encoder_image_passes", 0) or 0 for r in records)),
        "cache_hits": int(sum(r.get("cache_hits", 0) or 0 for r in records)),
        "versions": next((s["versions"] for s in combined.specs if s.get("versions")), {}),
    }
    paths = report.write_tables(view, out, meta)
    paths["plot"] = plot.plot(view, out / "plot.png")
    report.print_table(view, console)
    if console is not None:
        console.print(f"frozen encoder: {meta['encoder_image_passes']} image passes for {len(records)}"
                      f" cell(s), {meta['cache_hits']} cache hits", highlight=False)
        if problem:
            console.print(f"[yellow]warning:[/] baseline: {escape(problem)}", highlight=False)
        for cell, error in failures.items():
            console.print(f"[red]failed[/] {escape(cell)}: {escape(str(error))}", highlight=False)
        console.print(f"tables: {out / 'table.md'} (also .csv .tex .json), plot: {paths['plot']}", highlight=False)
    return paths
