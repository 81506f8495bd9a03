"""``cora-kit bench report DIR``: one self-contained ``DIR/report.html`` for a finished grid.

The page holds everything inline (no file, script or font fetched from anywhere):

* the table of ``table.json`` (what ``cora-kit bench merge`` wrote): mean ± sample std over
  seeds for every metric, per-kind ``exact-match/<kind>`` columns when the grid has them,
  the paired deltas to the baseline with their 95% bootstrap CIs, and NaN footnotes;
* ``plot.png``;
* the test items side by side: panorama thumbnail, query, kind, references, and every
  cell's prediction marked right or wrong by exact match, with filters by query kind, by
  cell, and "cells disagree".

Right/wrong comes from the cell's own per-item ``exact-match`` values (``cell.json``
``per_item``, the numbers the table averages); for a cell without them it is computed
with the registered ``exact-match`` metric, and when no such metric is installed the
marks are left out with that reason. Item queries and images come from the cells' data
(``config.yaml`` -> test split); an item whose image cannot be read shows no thumbnail.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cora_kit.bench.merge import load_cell_records
from cora_kit.bench.report import LABEL_COLUMNS
from cora_kit.errors import CoraKitError

EXACT = "exact-match"
THUMB = (256, 128)


@dataclass
class CellView:
    """One cell's column: label, seed and its predictions / marks by item id."""

    id: str
    group: str
    seed: Any
    predictions: dict[str, str] = field(default_factory=dict)
    correct: dict[str, bool] | None = None
    note: str = ""


# --- collecting ------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CoraKitError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def _group_label(cell: dict[str, Any]) -> str:
    parts = [cell.get("tiler") or "-", cell.get("resampler"), cell.get("loss")]
    return " / ".join(str(p) for p in (parts if parts[0] != "-" else parts[1:]))


def _exact_match_by_registry(preds: dict[str, str], refs: dict[str, list[str]]) -> tuple[dict[str, bool] | None, str]:
    from cora_kit.registry import REGISTRY

    try:
        metric = REGISTRY.create("metric", EXACT)
    except CoraKitError as exc:
        return None, f"no '{EXACT}' metric installed ({exc})"
    if not hasattr(metric, "score_items"):
        return None, f"the '{EXACT}' metric has no per-item scores"
    ids = [k for k in preds if k in refs]
    values = metric.score_items({k: preds[k] for k in ids}, {k: refs[k] for k in ids})
    return {k: bool(v) for k, v in values.items()}, f"marked with the '{EXACT}' metric by the report"


def _cells(records: list[dict[str, Any]], refs: dict[str, list[str]]) -> list[CellView]:
    out = []
    for rec in records:
        cell = rec.get("cell", {})
        cell_dir = Path(rec["cell_dir"])
        view = CellView(cell_dir.name, _group_label(cell), cell.get("seed"))
        if rec.get("status") != "ok":
            view.note = f"failed: {rec.get('error', '?')}"
            out.append(view)
            continue
        run_dir = Path(rec.get("run_dir") or cell_dir)
        pred_path = next((p for p in (run_dir / "predictions.jsonl", cell_dir / "predictions.jsonl") if p.is_file()), None)
        if pred_path is None:
            view.note = "no predictions.jsonl"
            out.append(view)
            continue
        view.predictions = {str(r["id"]): str(r.get("prediction", "")) for r in _read_jsonl(pred_path)}
        per_item = (rec.get("per_item") or {}).get(EXACT)
        if per_item:
            view.correct = {str(k): bool(v) for k, v in per_item.items()}
        else:
            view.correct, view.note = _exact_match_by_registry(view.predictions, refs)
        out.append(view)
    return out


def _references(records: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """{id: references}, {id: kind} from the first finished cell's references.jsonl."""
    for rec in records:
        if rec.get("status") != "ok":
            continue
        for d in (Path(rec.get("run_dir") or rec["cell_dir"]), Path(rec["cell_dir"])):
            path = d / "references.jsonl"
            if path.is_file():
                rows = _read_jsonl(path)
                refs = {str(r["id"]): list(r.get("references") or [r.get("reference", "")]) for r in rows}
                kinds = {str(r["id"]): str(r["kind"]) for r in rows if r.get("kind")}
                return refs, kinds
    return {}, {}


def _items(records: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], str]:
    """{id: {"query", "image_path", "kind"?}} of the test split of the first finished cell's data."""
    from cora_kit.config import read_config_file
    from cora_kit.train.data import load_splits

    for rec in records:
        if rec.get("status") != "ok":
            continue
        config_path = Path(rec.get("run_dir") or rec["cell_dir"]) / "config.yaml"
        if not config_path.is_file():
            continue
        try:
            config = read_config_file(config_path)
            if not config.data.path and not Path(config.data.synth_dir).is_dir():
                return {}, f"the synthetic set {config.data.synth_dir} is gone (not regenerated for a report)"
            test = load_splits(config).test
        except CoraKitError as exc:
            return {}, f"cannot read the test items ({exc})"
        return {str(i["id"]): {k: i.get(k) for k in ("query", "image_path", "kind")} for i in test}, ""
    return {}, "no finished cell with a config.yaml"


def _thumbnail(path: str | None) -> str | None:
    if not path:
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail(THUMB)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- rendering -----------------------------------------------------------------------------


def _fmt_cell(row: dict[str, Any], metric: str) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if not isinstance(mean, (int, float)) or math.isnan(mean):
        return '<span class="nan">NaN</span>'
    text = f"{mean:.4f}"
    if isinstance(std, (int, float)) and not math.isnan(std):
        text += f' <span class="std">± {std:.4f}</span>'
    return text


def _fmt_delta(row: dict[str, Any], metric: str) -> str:
    d, lo, hi = (row.get(f"{metric}_{k}") for k in ("delta", "ci_low", "ci_high"))
    if not isinstance(d, (int, float)) or math.isnan(d):
        return '<span class="nan">NaN</span>'
    sig = "sig" if (lo > 0 or hi < 0) else ""
    text = f'<span class="{sig}">{d:+.4f}</span> <span class="std">[{lo:+.4f}, {hi:+.4f}]</span>'
    slo, shi = row.get(f"{metric}_seed_ci_low"), row.get(f"{metric}_seed_ci_high")
    if isinstance(slo, (int, float)) and not math.isnan(slo):
        text += f' <span class="std">seeds [{slo:+.4f}, {shi:+.4f}]</span>'
    return text


def _table_html(meta: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = meta.get("rows", [])
    # the metrics table.md shows (table.json's "metrics" lists every scored key, bleu1..3 too)
    metrics: list[str] = meta.get("headline_metrics") or meta.get("metrics", [])
    labels = [c for c in LABEL_COLUMNS if rows and c in rows[0] and not all(r.get(c) in (None, "-") for r in rows)]
    deltas = [m for m in metrics if rows and f"{m}_delta" in rows[0]]
    head = labels + metrics + [f"Δ {m} [95% CI over items; over seeds]" for m in deltas] + ["n seeds"]
    out = ['<table class="scores"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        cells = [f"<td>{html.escape(str(r.get(c)))}</td>" for c in labels]
        cells += [f'<td class="num">{_fmt_cell(r, m)}</td>' for m in metrics]
        cells += [f'<td class="num">{_fmt_delta(r, m)}</td>' for m in deltas]
        n = int(r.get("n_seeds") or 0)
        failed = int(r.get("n_failed") or 0)
        cells.append(f'<td class="num">{n}' + (f' <span class="bad">({failed} failed)</span>' if failed else "") + "</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    notes = [f"{html.escape(k)}: NaN, {html.escape(str(v))}" for k, v in sorted((meta.get("unavailable") or {}).items())]
    legend = "Mean ± sample std over seeds."
    if deltas:
        legend += (f" Δ: paired difference to the baseline <b>{html.escape(str(meta.get('baseline')))}</b> over the"
                   " same test items and seeds, 95% percentile bootstrap CI over items (bold: the CI excludes 0).")
    out.append(f'<p class="muted">{legend}</p>')
    if notes:
        out.append("<ul class=\"muted\">" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>")
    failed_cells = meta.get("failed_cells") or {}
    if failed_cells:
        out.append("<ul class=\"bad\">" + "".join(
            f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in sorted(failed_cells.items())) + "</ul>")
    return "\n".join(out)


def _json_script(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def build_report(bench_dir: Path) -> str:
    """The report's HTML (see the module docstring)."""
    bench_dir = Path(bench_dir)
    table_path = bench_dir / "table.json"
    if not table_path.is_file():
        raise CoraKitError(f"{table_path}: missing; run `cora-kit bench merge {bench_dir}` first")
    try:
        meta = json.loads(table_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CoraKitError(f"{table_path}: not valid JSON ({exc.msg})") from None
    records = load_cell_records(bench_dir)
    refs, kinds = _references(records)
    items, items_note = _items(records)
    cells = _cells(records, refs)
    plot_path = bench_dir / "plot.png"
    plot = ("data:image/png;base64," + base64.b64encode(plot_path.read_bytes()).decode()) if plot_path.is_file() else None

    ids = list(refs) or sorted({k for c in cells for k in c.predictions})
    images: dict[str, str] = {}
    image_keys: dict[str, int] = {}
    data_items = []
    for key in ids:
        info = items.get(key, {})
        img_path = info.get("image_path")
        img_key = None
        if img_path:
            if img_path not in image_keys:
                thumb = _thumbnail(img_path)
                image_keys[img_path] = len(images) if thumb else -1
                if thumb:
                    images[str(len(images))] = thumb
            img_key = image_keys[img_path] if image_keys[img_path] >= 0 else None
        data_items.append({
            "id": key, "query": info.get("query"), "kind": kinds.get(key) or info.get("kind") or None,
            "refs": refs.get(key, []), "img": img_key, "image": Path(img_path).name if img_path else None,
            "preds": [c.predictions.get(key) for c in cells],
            "ok": [None if c.correct is None or key not in c.correct else c.correct[key] for c in cells],
        })
    data = {
        "cells": [{"id": c.id, "group": c.group, "seed": c.seed, "note": c.note,
                   "em": (sum(c.correct.values()) / len(c.correct)) if c.correct else None} for c in cells],
        "items": data_items, "images": images,
    }
    name = html.escape(bench_dir.resolve().name)
    versions = meta.get("versions") or {}
    subtitle = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("cora_kit", "torch", "machine"))
    notes = [n for n in [items_note] if n]
    return _PAGE.format(
        title=name, subtitle=html.escape(subtitle), n_cells=len(cells), n_items=len(ids),
        table=_table_html(meta),
        plot=f'<img class="plot" alt="bench plot" src="{plot}">' if plot else '<p class="muted">no plot.png</p>',
        notes="".join(f'<p class="bad">{html.escape(n)}</p>' for n in notes),
        data=_json_script(data), style=_STYLE, script=_SCRIPT,
    )


def write_report(bench_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (atomically) into ``bench_dir`` (or ``out``); returns its path."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise CoraKitError(f"{bench_dir}: no such bench folder")
    path = Path(out) if out is not None else bench_dir / "report.html"
    text = build_report(bench_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem 2rem; color: #1d232b; }
h1 { margin: 0 0 .2rem; font-size: 1.5rem; } h2 { margin-top: 2rem; font-size: 1.15rem; }
.muted { color: #66707c; } .bad { color: #b3261e; } .nan { color: #8a939e; font-style: italic; }
table.scores { border-collapse: collapse; } table.scores th, table.scores td { padding: .3rem .6rem; border-bottom: 1px solid #e3e6ea; }
table.scores th { text-align: left; background: #f4f6f8; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.std { color: #66707c; font-size: .9em; } .sig { font-weight: 700; }
img.plot { max-width: 100%; border: 1px solid #e3e6ea; }
.filters { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: flex-start; margin: .6rem 0 1rem; padding: .6rem .8rem; background: #f4f6f8; border-radius: 6px; }
.filters fieldset { border: 0; margin: 0; padding: 0; } .filters legend { font-weight: 600; padding: 0; }
.filters label { margin-right: .8rem; white-space: nowrap; }
.scroll { overflow-x: auto; }
table.examples { border-collapse: collapse; font-size: 13px; }
table.examples th, table.examples td { border: 1px solid #e3e6ea; padding: .3rem .45rem; vertical-align: top; }
table.examples th { background: #f4f6f8; position: sticky; top: 0; font-weight: 600; min-width: 8rem; }
table.examples td.item { min-width: 16rem; max-width: 22rem; }
table.examples img { display: block; width: 256px; height: 128px; object-fit: cover; border-radius: 3px; }
td.pred.right { background: #e6f4ea; } td.pred.wrong { background: #fce8e6; } td.pred.na { background: #fafafa; color: #66707c; }
.mark { font-weight: 700; margin-right: .25rem; } .right .mark { color: #137333; } .wrong .mark { color: #b3261e; }
.kind { display: inline-block; padding: 0 .4rem; border-radius: 9px; background: #e8eefc; color: #24488f; font-size: 12px; }
.refs { color: #66707c; margin: .2rem 0 0; padding-left: 1rem; }
.empty { color: #8a939e; font-style: italic; }
"""

_SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("bench-data").textContent);
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

function setup() {
  const kinds = {};
  for (const it of DATA.items) kinds[it.kind || "(none)"] = (kinds[it.kind || "(none)"] || 0) + 1;
  const sel = $("kind");
  sel.innerHTML = `<option value="">all kinds (${DATA.items.length})</option>` +
    Object.keys(kinds).sort().map((k) => `<option value="${esc(k)}">${esc(k)} (${kinds[k]})</option>`).join("");
  $("cells").innerHTML = DATA.cells.map((c, i) =>
    `<label title="${esc(c.note || c.id)}"><input type="checkbox" class="cell-toggle" value="${i}" checked> ${esc(c.group)} · seed ${esc(c.seed)}</label>`).join("");
  for (const el of document.querySelectorAll("#kind, #disagree, #wrong-only, .cell-toggle")) el.addEventListener("change", render);
  $("all-cells").addEventListener("click", () => { document.querySelectorAll(".cell-toggle").forEach((b) => b.checked = true); render(); });
  $("no-cells").addEventListener("click", () => { document.querySelectorAll(".cell-toggle").forEach((b) => b.checked = false); render(); });
  render();
}

function render() {
  const kind = $("kind").value;
  const shown = [...document.querySelectorAll(".cell-toggle")].filter((b) => b.checked).map((b) => +b.value);
  const disagree = $("disagree").checked, wrongOnly = $("wrong-only").checked;
  const rows = DATA.items.filter((it) => {
    if (kind && (it.kind || "(none)") !== kind) return false;
    const marks = shown.map((i) => it.ok[i]).filter((m) => m !== null);
    if (disagree && !(marks.includes(true) && marks.includes(false))) return false;
    if (wrongOnly && !marks.includes(false)) return false;
    return true;
  });
  const head = "<tr><th>item</th>" + shown.map((i) => {
    const c = DATA.cells[i];
    const em = rows.map((it) => it.ok[i]).filter((m) => m !== null);
    const acc = em.length ? ` · ${em.filter(Boolean).length}/${em.length} right` : (c.note ? ` · ${esc(c.note)}` : "");
    return `<th data-cell="${esc(c.id)}">${esc(c.group)}<br><span class="muted">seed ${esc(c.seed)}${acc}</span></th>`;
  }).join("") + "</tr>";
  const body = rows.map((it) => {
    const img = it.img !== null ? `<img alt="${esc(it.image)}" src="${DATA.images[it.img]}">` : `<div class="empty">${it.image ? esc(it.image) + " (not readable)" : "no image"}</div>`;
    const refs = it.refs.map((r) => `<li>${esc(r)}</li>`).join("");
    const item = `<td class="item">${img}<div><b>${esc(it.query || it.id)}</b> ${it.kind ? `<span class="kind">${esc(it.kind)}</span>` : ""}</div><ul class="refs">${refs}</ul></td>`;
    const preds = shown.map((i) => {
      const p = it.preds[i], ok = it.ok[i];
      const cls = ok === true ? "right" : ok === false ? "wrong" : "na";
      const mark = ok === true ? "✓" : ok === false ? "✗" : "";
      const text = p === null || p === undefined ? '<span class="empty">(no prediction)</span>' : p === "" ? '<span class="empty">(empty)</span>' : esc(p);
      return `<td class="pred ${cls}" data-ok="${ok}"><span class="mark">${mark}</span>${text}</td>`;
    }).join("");
    return `<tr data-kind="${esc(it.kind || "")}">${item}${preds}</tr>`;
  }).join("");
  $("examples").innerHTML = `<thead>${head}</thead><tbody>${body}</tbody>`;
  $("count").textContent = `${rows.length} of ${DATA.items.length} items, ${shown.length} of ${DATA.cells.length} cells`;
}
setup();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>cora-kit bench · {title}</title>
<style>{style}</style></head>
<body>
<h1>cora-kit bench · {title}</h1>
<p class="muted">{n_cells} cells, {n_items} test items. {subtitle}</p>
{notes}
<h2>Table</h2>
{table}
<h2>Plot</h2>
{plot}
<h2>Examples</h2>
<div class="filters">
  <fieldset><legend>Query kind</legend><select id="kind"></select></fieldset>
  <fieldset><legend>Show items</legend>
    <label><input type="checkbox" id="disagree"> where the shown cells disagree</label>
    <label><input type="checkbox" id="wrong-only"> with a wrong prediction</label></fieldset>
  <fieldset><legend>Cells <button type="button" id="all-cells">all</button> <button type="button" id="no-cells">none</button></legend>
    <div id="cells"></div></fieldset>
</div>
<p id="count" class="muted"></p>
<p class="muted">✓ / ✗: the prediction equals one of the references after normalisation (exact match:
lower-case, punctuation removed, whitespace collapsed), the per-item values behind the table's exact-match.</p>
<div class="scroll"><table id="examples" class="examples"></table></div>
<script type="application/json" id="bench-data">{data}</script>
<script>{script}</script>
</body></html>
"""


__all__ = ["build_report", "write_report"]
