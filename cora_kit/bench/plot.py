"""``plot.png``: every headline metric with its 95% CI, the per-kind accuracy, and (with a
baseline) each row's paired difference to it with its CI over items (red) and, with two or
more seeds, its Student-t CI over seeds (blue, ``stats.seed_t_ci``).

Bars are the mean of the seed-averaged per-item scores with the 95% bootstrap CI over
test items (``<metric>_item_*``); a metric without per-item scores is drawn from its mean
over seeds and says "no CI". For exact match, CIDEr and ROUGE-L the per-item mean is the
metric itself; where it is not (BLEU: sentence-level mean) the panel says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cora_kit.bench.report import TableView, label_columns
from cora_kit.fs import atomic_write


def _row_names(view: TableView) -> list[str]:
    labels = label_columns(view.table)
    return [" / ".join(str(r[c]) for c in labels) for _, r in view.table.iterrows()]


def _bar_stats(view: TableView, metric: str) -> tuple[list[float], list[float] | None, bool]:
    """Heights, CI half-widths [2][n] (None: no CI) and whether heights are per-item means
    that differ from the metric's own mean."""
    t = view.table
    if f"{metric}_item_mean" in t and t[f"{metric}_item_mean"].notna().any():
        mean = t[f"{metric}_item_mean"].astype(float).to_numpy()
        lo = np.clip(mean - t[f"{metric}_item_ci_low"].astype(float).to_numpy(), 0, None)
        hi = np.clip(t[f"{metric}_item_ci_high"].astype(float).to_numpy() - mean, 0, None)
        own = t[f"{metric}_mean"].astype(float).to_numpy() if f"{metric}_mean" in t else mean
        differs = bool(np.nanmax(np.abs(own - mean)) > 1e-9) if np.isfinite(own - mean).any() else False
        return list(mean), [list(np.nan_to_num(lo)), list(np.nan_to_num(hi))], differs
    col = f"{metric}_mean"
    return (list(t[col].astype(float)) if col in t else [math.nan] * len(t)), None, False


def _bars(ax: Any, view: TableView, metric: str) -> None:
    names = _row_names(view)
    heights, err, differs = _bar_stats(view, metric)
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(heights), 0.7, yerr=err, capsize=3, color="#4c72b0")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    title = metric
    if all(math.isnan(h) for h in heights):
        title += " (unavailable)"
    elif err is None:
        title += " (no CI: no per-item scores)"
    elif differs:
        title += " (mean of per-item scores)"
    ax.set_title(title, fontsize=9)


def _kinds(ax: Any, view: TableView, metric: str) -> None:
    keys = view.parts[metric]
    names = _row_names(view)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for j, name in enumerate(names):
        heights, errs = [], [[], []]
        for key in keys:
            h, err, _ = _bar_stats(view, key)
            heights.append(h[j])
            errs[0].append(err[0][j] if err else 0.0)
            errs[1].append(err[1][j] if err else 0.0)
        ax.bar(x + j * width, np.nan_to_num(heights), width, yerr=errs, capsize=2, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2)
    ax.set_xticklabels([k.partition("/")[2] for k in keys], rotation=20, ha="right", fontsize=7)
    ax.set_title(f"{metric} per query kind (95% CI over items)", fontsize=9)
    ax.legend(fontsize=6)


def _deltas(ax: Any, view: TableView, metric: str) -> None:
    t = view.table
    names = _row_names(view)
    d = t[f"{metric}_delta"].astype(float).to_numpy()
    lo = np.nan_to_num(d - t[f"{metric}_ci_low"].astype(float).to_numpy())
    hi = np.nan_to_num(t[f"{metric}_ci_high"].astype(float).to_numpy() - d)
    y = np.arange(len(names))
    ax.errorbar(np.nan_to_num(d), y, xerr=[lo, hi], fmt="o", capsize=3, color="#c44e52", label="over items")
    title = f"Δ{metric} vs {view.baseline} (95% CI over items)"
    if f"{metric}_seed_ci_low" in t and t[f"{metric}_seed_ci_low"].notna().any():
        slo = np.nan_to_num(d - t[f"{metric}_seed_ci_low"].astype(float).to_numpy())
        shi = np.nan_to_num(t[f"{metric}_seed_ci_high"].astype(float).to_numpy() - d)
        ax.errorbar(np.nan_to_num(d), y + 0.25, xerr=[slo, shi], fmt="none", capsize=2, lw=0.8,
                    color="#4c72b0", label="over seeds")
        ax.legend(fontsize=6)
        title = f"Δ{metric} vs {view.baseline} (95% CIs)"
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)


def plot(view: TableView, path: Path) -> Path:
    """Write ``plot.png`` (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(view.headline)
    delta_metrics = [m for m in metrics if view.baseline and f"{m}_delta" in view.table
                     and view.table[f"{m}_delta"].notna().any()]
    ncols = max(1, len(metrics))
    nrows = 1 + len(view.parts) + (1 if delta_metrics else 0)
    fig = plt.figure(figsize=(max(6.0, 3.6 * ncols), 3.8 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    for i, metric in enumerate(metrics):
        _bars(fig.add_subplot(grid[0, i]), view, metric)
    for r, metric in enumerate(view.parts, start=1):
        _kinds(fig.add_subplot(grid[r, :]), view, metric)
    for i, metric in enumerate(delta_metrics):
        _deltas(fig.add_subplot(grid[nrows - 1, i]), view, metric)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
