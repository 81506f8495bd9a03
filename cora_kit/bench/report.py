"""Bench outputs: table.csv / table.md / table.tex / table.json and the terminal table.

Every text format renders the same column list (``main_columns``, ``kind_columns``), so
headers and rows always agree. ``table.tex`` is a complete LaTeX document that compiles
with ``pdflatex`` and only the base packages (geometry, graphicx); each ``tabular`` can
be copied into a paper as it is.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cora_kit.fs import write_text_atomic

LABEL_COLUMNS = ["tiler", "resampler", "loss"]
STAGES = (1, 2, 3)


@dataclass
class TableView:
    """What the tables show: the aggregated rows and how to read them."""

    table: pd.DataFrame
    #: metric keys with a column each (mean ± std, and Δ with a baseline)
    headline: list[str]
    #: ``{metric: [metric/<kind>, ...]}``: the per-kind table
    parts: Mapping[str, list[str]] = field(default_factory=dict)
    #: metric -> why it is NaN
    unavailable: Mapping[str, str] = field(default_factory=dict)
    #: what -> why (a CI or delta left NaN)
    notes: Mapping[str, str] = field(default_factory=dict)
    general: Sequence[str] = ()
    baseline: str | None = None


@dataclass
class Column:
    header: str
    value: Callable[[Mapping[str, Any]], str]
    label: bool = False  # a row label (left-aligned)


def _num(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def mean_std(row: Mapping[str, Any], metric: str) -> str:
    mean, std = _num(row, f"{metric}_mean"), _num(row, f"{metric}_std")
    if math.isnan(mean):
        return "NaN"
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


def delta(row: Mapping[str, Any], metric: str) -> str:
    d, lo, hi = (_num(row, f"{metric}_{k}") for k in ("delta", "ci_low", "ci_high"))
    if math.isnan(d):
        return "NaN"
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def seed_ci(row: Mapping[str, Any], metric: str) -> str:
    lo, hi = (_num(row, f"{metric}_{k}") for k in ("seed_ci_low", "seed_ci_high"))
    if math.isnan(lo):
        return "NaN"
    return f"[{lo:+.4f}, {hi:+.4f}]"


def count(value: float) -> str:
    """A parameter count: 943,296 -> ``943.3k``; 3,115,264 -> ``3.12M``."""
    if math.isnan(value):
        return "NaN"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return str(int(value))


def label_columns(table: pd.DataFrame) -> list[str]:
    labels = [c for c in LABEL_COLUMNS if c in table.columns]
    if "tiler" in labels and set(table["tiler"]) <= {"-"}:
        labels.remove("tiler")
    return labels


def _label_columns(view: TableView) -> list[Column]:
    return [Column(c, lambda r, c=c: str(r[c]), label=True) for c in label_columns(view.table)]


def _metric_columns(
    view: TableView, metrics: Sequence[str], short: Callable[[str], str] = str, over_seeds: bool = False
) -> list[Column]:
    """Per metric: mean ± std, and with a baseline Δ with its CI over items (and, with
    ``over_seeds``, the CI over seeds)."""
    cols = []
    for m in metrics:
        cols.append(Column(short(m), lambda r, m=m: mean_std(r, m)))
        if view.baseline and f"{m}_delta" in view.table.columns:
            cols.append(Column(f"Δ{short(m)} [95% CI]", lambda r, m=m: delta(r, m)))
            if over_seeds and f"{m}_seed_ci_low" in view.table.columns:
                cols.append(Column(f"Δ{short(m)} 95% CI over seeds", lambda r, m=m: seed_ci(r, m)))
    return cols


def main_columns(view: TableView) -> list[Column]:
    """Labels, each headline metric (and its Δ), adj_cos, trainable params per stage,
    wall time, seeds."""
    t = view.table
    cols = _label_columns(view) + _metric_columns(view, view.headline, over_seeds=True)
    cols.append(Column("adj_cos", lambda r: mean_std(r, "adj_cos")))
    stages = [k for k in STAGES if f"trainable_params_stage{k}_mean" in t and t[f"trainable_params_stage{k}_mean"].notna().any()]
    if stages:
        for k in stages:
            cols.append(Column(f"params S{k}", lambda r, k=k: count(_num(r, f"trainable_params_stage{k}_mean"))))
    else:
        cols.append(Column("trainable params (max over stages)", lambda r: count(_num(r, "trainable_params_mean"))))
    cols.append(Column("wall s", lambda r: "NaN" if math.isnan(_num(r, "wall_time_s_mean")) else f"{_num(r, 'wall_time_s_mean'):.1f}"))

    def seeds(r: Mapping[str, Any]) -> str:
        done, failed = (int(v) if not math.isnan(v) else 0 for v in (_num(r, "n_seeds"), _num(r, "n_failed")))
        return str(done) + (f" ({failed} failed)" if failed else "")

    cols.append(Column("n_seeds", seeds))
    return cols


def kind_columns(view: TableView, metric: str) -> list[Column]:
    """Labels and one column per kind of ``metric`` (``exact-match/count`` -> ``count``)."""
    keys = list(view.parts.get(metric, []))
    return _label_columns(view) + _metric_columns(view, keys, short=lambda k: k.partition("/")[2])


def _rows(view: TableView) -> list[Mapping[str, Any]]:
    return [row for _, row in view.table.iterrows()]


def footnotes(view: TableView) -> list[str]:
    notes = [f"{name}: NaN, {reason}" for name, reason in sorted(view.unavailable.items())]
    notes += [f"{what}: {why}" for what, why in view.notes.items() if what not in view.unavailable]
    return notes + list(view.general)


def legend(view: TableView) -> str:
    text = ("Values are mean ± sample std over seeds (n_seeds). params S<k>: trainable parameters in"
            " stage k. wall s: seconds per cell (training and evaluation), mean over seeds.")
    if view.baseline:
        text += (f" Δ: paired difference to the baseline {view.baseline} over the same test items and"
                 " seeds (mean of per-item scores: for BLEU the sentence-level mean), with its 95%"
                 " percentile bootstrap CI over items (it leaves out the seed-to-seed spread) and,"
                 " for the headline metrics, its 95% Student-t CI over seeds (the per-seed mean"
                 " differences, n_seeds - 1 degrees of freedom: wide with 3 seeds). A difference"
                 " holds when both exclude zero.")
    return text


# --- markdown -----------------------------------------------------------------


def _md_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c.header) for c in columns) + " |",
             "|" + "|".join(":---" if c.label else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(esc(c.value(r)) for c in columns) + " |" for r in rows]
    return lines


def render_md(view: TableView) -> str:
    rows = _rows(view)
    lines = _md_table(main_columns(view), rows)
    for metric in view.parts:
        lines += ["", f"{metric} per query kind:", ""] + _md_table(kind_columns(view, metric), rows)
    notes = footnotes(view)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines + ["", legend(view), ""])


# --- LaTeX --------------------------------------------------------------------

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "%": r"\%", "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "—": "---", "–": "--", "’": "'",
}


def tex_escape(text: str) -> str:
    """Plain text -> LaTeX that pdflatex compiles with no extra package: specials escaped,
    ``±``/``Δ`` in math mode, other non-ASCII letters reduced to ASCII (or ``?``)."""
    out = []
    for ch in str(text):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(ascii_ or "?")
    return "".join(out)


def _tex_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    spec = "".join("l" if c.label else "r" for c in columns)
    body = [
        r"\begin{tabular}{" + spec + "}",
        r"\hline",
        " & ".join(tex_escape(c.header) for c in columns) + r" \\",
        r"\hline",
    ]
    body += [" & ".join(tex_escape(c.value(r)) for c in columns) + r" \\" for r in rows]
    body += [r"\hline", r"\end{tabular}"]
    # scaled down to the text width only when wider than it
    return [r"\sbox0{%", *body, "}%",
            r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi", ""]


def render_tex(view: TableView) -> str:
    rows = _rows(view)
    lines = [
        "% cora-kit bench table: compile with `pdflatex table.tex`; each tabular can be",
        "% copied into a paper (it needs no package).",
        r"\documentclass{article}",
        r"\usepackage[landscape,margin=1.5cm]{geometry}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
        r"\noindent",
    ]
    lines += _tex_table(main_columns(view), rows)
    for metric in view.parts:
        lines += [r"\bigskip", "", r"\noindent " + tex_escape(f"{metric} per query kind:"), r"\par\smallskip", r"\noindent"]
        lines += _tex_table(kind_columns(view, metric), rows)
    lines += [r"\bigskip", "", r"\noindent\footnotesize " + tex_escape(legend(view))]
    for note in footnotes(view):
        lines += ["", r"\noindent " + tex_escape(note)]
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


# --- all formats --------------------------------------------------------------


def write_tables(view: TableView, out_dir: Path, meta: Mapping[str, object]) -> dict[str, Path]:
    """Write every table format (each atomically: an interrupted merge keeps the old file);
    returns {format: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"table.{k}" for k in ("csv", "md", "tex", "json")}
    write_text_atomic(paths["csv"], view.table.to_csv(index=False))
    write_text_atomic(paths["md"], render_md(view))
    write_text_atomic(paths["tex"], render_tex(view))
    records = json.loads(view.table.to_json(orient="records"))
    doc = {"rows": records, "unavailable": dict(view.unavailable), "footnotes": footnotes(view), **meta}
    write_text_atomic(paths["json"], json.dumps(doc, indent=2) + "\n")
    return paths


def _rich(title: str, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(Text(c.header), justify="left" if c.label else "right")
    for r in rows:
        table.add_row(*[Text(c.value(r)) for c in columns])
    return table


def print_table(view: TableView, console: Console | None = None) -> None:
    """The bench tables in the terminal: metrics, then Δ to the baseline, then per kind
    (table.md has everything in one table; a terminal is narrower)."""
    console = console or Console()
    rows = _rows(view)
    labels = _label_columns(view)
    main = main_columns(view)
    seeds = [c for c in main if c.header == "n_seeds"]
    means = [c for c in main if c.header in view.headline]
    console.print(_rich("cora-kit bench (mean ± std over seeds)", labels + means + seeds, rows))
    deltas = [c for c in main if c.header.startswith("Δ") and any(c.value(r) != "NaN" for r in rows)]
    if deltas:
        console.print(_rich(f"difference to {view.baseline} (95% CIs over test items and over seeds)", labels + deltas, rows))
    for metric in view.parts:
        console.print(_rich(f"{metric} per query kind", kind_columns(view, metric), rows))
    for note in footnotes(view):
        console.print(f"  {note}", highlight=False, markup=False)
