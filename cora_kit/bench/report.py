"""Bench outputs: table.csv / table.md / table.tex / table.json, plot.png, rich table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

LABEL_COLUMNS = ["tiler", "resampler", "loss"]


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _mean_std(row: Mapping[str, object], metric: str) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if not isinstance(mean, float) or math.isnan(mean):
        return "NaN"
    if isinstance(std, float) and not math.isnan(std):
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f}"


def _delta(row: Mapping[str, object], metric: str) -> str:
    d, lo, hi = (row.get(f"{metric}_{k}") for k in ("delta", "ci_low", "ci_high"))
    if not isinstance(d, float) or math.isnan(d):
        return "NaN"
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _labels(table: pd.DataFrame) -> list[str]:
    labels = [c for c in LABEL_COLUMNS if c in table.columns]
    if "tiler" in labels and set(table["tiler"]) <= {"-"}:
        labels.remove("tiler")
    return labels


def _footnotes(unavailable: Mapping[str, str]) -> list[str]:
    return [f"{name}: NaN, {reason}" for name, reason in sorted(unavailable.items())]


def write_tables(
    table: pd.DataFrame,
    out_dir: Path,
    metrics: Sequence[str],
    unavailable: Mapping[str, str],
    meta: Mapping[str, object],
) -> dict[str, Path]:
    """Write every table format; returns {format: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "table.csv",
        "md": out_dir / "table.md",
        "tex": out_dir / "table.tex",
        "json": out_dir / "table.json",
    }
    table.to_csv(paths["csv"], index=False)
    labels = _labels(table)
    deltas = [m for m in metrics if f"{m}_delta" in table.columns]
    headers = (
        labels + list(metrics) + [f"Δ{m} [95% CI]" for m in deltas]
        + ["adj_cos", "trainable params", "wall s", "n_seeds"]
    )
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in labels] + [_mean_std(row, m) for m in metrics]
        cells += [_delta(row, m) for m in deltas]
        cells += [
            _mean_std(row, "adj_cos"),
            _fmt(row.get("trainable_params_mean", math.nan), 0),
            _fmt(row.get("wall_time_s_mean", math.nan), 1),
        ]
        cells.append(str(int(row.get("n_seeds", 0))) + (f" ({int(row['n_failed'])} failed)" if row.get("n_failed") else ""))
        lines.append("| " + " | ".join(cells) + " |")
    notes = _footnotes(unavailable)
    md = "\n".join(lines) + "\n"
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    md += "\nValues are mean ± sample std over seeds."
    if deltas:
        md += (" Δ: paired difference to the baseline over the same test items and seeds (mean of"
               " per-item scores), 95% percentile bootstrap CI over items.")
    md += "\n"
    paths["md"].write_text(md, encoding="utf-8")
    tex = [
        "\\begin{tabular}{" + "l" * len(labels) + "r" * (len(metrics) + 1) + "}",
        "\\toprule",
        " & ".join(_tex(h) for h in headers) + " \\\\",
        "\\midrule",
    ]
    for _, row in table.iterrows():
        cells = [_tex(str(row[c])) for c in labels]
        cells += [_mean_std(row, m).replace("±", "$\\pm$") for m in metrics]
        cells.append(str(int(row.get("n_seeds", 0))))
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}"]
    tex += [f"% {n}" for n in notes]
    paths["tex"].write_text("\n".join(tex) + "\n", encoding="utf-8")
    records = json.loads(table.to_json(orient="records"))
    paths["json"].write_text(
        json.dumps({"rows": records, "unavailable": dict(unavailable), **meta}, indent=2) + "\n",
        encoding="utf-8",
    )
    return paths


def _tex(text: str) -> str:
    return text.replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")


def print_table(table: pd.DataFrame, metrics: Sequence[str], unavailable: Mapping[str, str], console: Console | None = None) -> None:
    """The bench table in the terminal."""
    console = console or Console()
    labels = _labels(table)
    rich_table = Table(title="cora-kit bench (mean ± std over seeds)")
    for col in labels + list(metrics) + ["n_seeds"]:
        rich_table.add_column(col, justify="left" if col in labels else "right")
    for _, row in table.iterrows():
        n = str(int(row.get("n_seeds", 0)))
        if row.get("n_failed"):
            n += f" ([red]{int(row['n_failed'])} failed[/])"
        rich_table.add_row(*[str(row[c]) for c in labels], *[_mean_std(row, m) for m in metrics], n)
    console.print(rich_table)
    for note in _footnotes(unavailable):
        console.print(f"  {note}", highlight=False)


def plot(table: pd.DataFrame, metrics: Sequence[str], path: Path) -> Path:
    """Grouped bars (one bar per row label, grouped by resampler) with std error bars,
    one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = _labels(table)
    group_col = "tiler" if "tiler" in labels else "resampler"
    bar_cols = [c for c in labels if c != group_col]
    groups = list(dict.fromkeys(table[group_col]))
    bars = list(dict.fromkeys(tuple(r) for r in table[bar_cols].itertuples(index=False))) if bar_cols else [()]
    n = max(1, len(metrics))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.8), squeeze=False)
    width = 0.8 / max(1, len(bars))
    for ax, metric in zip(axes[0], metrics):
        for j, bar in enumerate(bars):
            means, stds = [], []
            for g in groups:
                sel = table[table[group_col] == g]
                for col, val in zip(bar_cols, bar):
                    sel = sel[sel[col] == val]
                m = float(sel[f"{metric}_mean"].iloc[0]) if len(sel) and f"{metric}_mean" in sel else math.nan
                s = float(sel[f"{metric}_std"].iloc[0]) if len(sel) and f"{metric}_std" in sel else math.nan
                means.append(m)
                stds.append(0.0 if math.isnan(s) else s)
            x = np.arange(len(groups)) + j * width
            ax.bar(x, means, width, yerr=stds, capsize=3, label="/".join(bar) if bar else None)
        ax.set_xticks(np.arange(len(groups)) + width * (len(bars) - 1) / 2)
        ax.set_xticklabels(groups, rotation=20)
        ax.set_title(metric if not table[f"{metric}_mean"].isna().all() else f"{metric} (unavailable)")
    if bar_cols:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
