"""Aggregation over seeds and paired bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

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
