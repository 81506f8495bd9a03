"""Aggregation over seeds and paired bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

GROUP_COLUMNS = ["tiler", "resampler", "loss"]


def aggregate_seeds(cells: pd.DataFrame, value_columns: Sequence[str]) -> pd.DataFrame:
    """One row per (tiler, resampler, loss): ``<col>_mean``, ``<col>_std`` (sample std,
    ddof=1, NaN for one seed), ``n_seeds`` (finished) and ``n_failed``.

    ``cells`` has one row per cell with GROUP_COLUMNS, ``status`` ("ok" or "failed")
    and the value columns; failed cells count in ``n_failed`` only.
    """
    keys = [c for c in GROUP_COLUMNS if c in cells.columns]
    frame = cells.copy()
    frame[keys] = frame[keys].fillna("-")
    rows: list[dict[str, object]] = []
    for group, g in frame.groupby(keys, sort=False):
        ok = g[g["status"] == "ok"]
        row: dict[str, object] = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n_seeds"] = int(len(ok))
        row["n_failed"] = int(len(g) - len(ok))
        for col in value_columns:
            values = pd.to_numeric(ok[col], errors="coerce") if col in ok else pd.Series(dtype=float)
            values = values.dropna()
            row[f"{col}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired_bootstrap_ci(
    deltas: np.ndarray, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean paired difference over items and its percentile bootstrap CI.

    ``deltas`` ``[n_items]``: per-item (candidate - baseline), already averaged over seeds.
    Returns ``(mean, ci_low, ci_high)``; NaN for no items.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, deltas.size, size=(n_resamples, deltas.size))
    means = deltas[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(deltas.mean()), float(lo), float(hi)


#: per seed, per metric key: ``{item id: score}`` (``per_item`` of each finished cell)
SeedItems = Mapping[int, Mapping[str, Mapping[str, float]]]


def seed_averaged_items(per_seed: SeedItems, metric: str) -> tuple[np.ndarray | None, str | None]:
    """Per-item scores of one row averaged over its seeds ``[n_items]`` (items in id order).

    Returns ``(values, None)``, or ``(None, reason)`` when no seed has per-item scores for
    ``metric`` or the seeds were scored on different items.
    """
    seeds = [s for s in sorted(per_seed) if per_seed[s].get(metric)]
    if not seeds:
        return None, "no per-item scores"
    ids = sorted(per_seed[seeds[0]][metric])
    if any(sorted(per_seed[s][metric]) != ids for s in seeds[1:]):
        return None, "the seeds were scored on different items"
    values = np.array([[per_seed[s][metric][i] for i in ids] for s in seeds], dtype=np.float64)
    return values.mean(axis=0), None


def per_seed_deltas(
    candidate: SeedItems, baseline: SeedItems, metric: str
) -> tuple[dict[int, np.ndarray] | None, str | None]:
    """Per seed both rows finished: the per-item differences candidate - baseline
    ``{seed: [n_items]}`` over the items they share (the same items in every seed), or
    ``(None, reason)``."""
    seeds = sorted(s for s in set(candidate) & set(baseline)
                   if candidate[s].get(metric) and baseline[s].get(metric))
    if not seeds:
        return None, "no seed with per-item scores in both rows"
    out: dict[int, np.ndarray] = {}
    ids0 = None
    for s in seeds:
        c, b = candidate[s][metric], baseline[s][metric]
        ids = sorted(set(c) & set(b))
        if ids0 is not None and ids != ids0:
            return None, "the seeds were scored on different items"
        if not ids:
            return None, "the rows share no scored item"
        ids0 = ids
        out[s] = np.array([c[i] - b[i] for i in ids], dtype=np.float64)
    return out, None


def item_bootstrap_ci(per_seed: Mapping[int, np.ndarray], n_resamples: int = 10_000) -> tuple[float, float, float]:
    """``paired_bootstrap_ci`` of the per-item differences ``{seed: [n_items]}``
    (``per_seed_deltas``) averaged over the seeds: a CI over items, which does not include
    the seed-to-seed spread (``seed_t_ci`` does)."""
    return paired_bootstrap_ci(np.mean(list(per_seed.values()), axis=0), n_resamples)


def seed_t_ci(
    per_seed: Mapping[int, np.ndarray], confidence: float = 0.95
) -> tuple[tuple[float, float, float], str | None]:
    """Per seed the mean of its per-item differences ``[n_items]``, then their mean and
    Student's t interval (n - 1 degrees of freedom). With 3 seeds the interval is wide
    (t = 4.30): it is the honest one when seeds disagree more than items do.
    ``((nan, nan, nan), reason)`` with fewer than 2 seeds."""
    means = np.array([d.mean() for d in per_seed.values()])
    if means.size < 2:
        return (math.nan,) * 3, f"{means.size} seed shared with the baseline (a CI over seeds needs 2 or more)"
    mean = float(means.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=means.size - 1) * means.std(ddof=1) / math.sqrt(means.size))
    return (mean, mean - half, mean + half), None
