"""``cora-kit bench report``: a real (tiny) grid's report.html, checked as data and in a
real headless Chromium (filters by kind and by cell, thumbnails, plot; screenshot saved)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from browser import artifacts_dir
from cora_kit.bench.html_report import build_report
from cora_kit.cli import main

FAST = [
    "--set", "stages.stage1.max_steps=1", "--set", "stages.stage2.max_steps=1",
    "--set", "stages.stage3.max_steps=1", "--set", "model.stitcher.name=nearest-view",
    "--set", "eval.max_new_tokens=4",
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2x1x1 grid (mlp, bimamba) x none x seed 0 on a tiny synthetic set."""
    from cora_kit.data.synth import ensure_synthetic

    root = tmp_path_factory.mktemp("report")
    data = ensure_synthetic(root / "data", n_train=6, n_val=2, n_test=3, size=(64, 128), seed=0)
    out = root / "bench"
    args = ["bench", "--resamplers", "mlp,bimamba", "--losses", "none", "--seeds", "1", "--preset", "tiny",
            "--data", str(data), "--out", str(out), "--baseline", "mlp:none", *FAST,
            "--set", "eval.metrics=[cider,exact-match]"]
    assert main(args) == 0
    return out


def _data(html: str) -> dict[str, Any]:
    return json.loads(re.search(r'<script type="application/json" id="bench-data">(.*?)</script>', html, re.S)
                      .group(1).replace("<\\/", "</"))


def test_report_holds_table_plot_and_every_item(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", str(grid)]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (grid / "report.html").read_text(encoding="utf-8")
    # self-contained: nothing fetched (no src/href to http, files or other paths)
    assert not re.search(r'(?:src|href)="(?!data:|#|\$\{)', html)
    table = json.loads((grid / "table.json").read_text())
    for row in table["rows"]:
        assert f"{row['cider_mean']:.4f}" in html  # the table's numbers
    assert "Δ cider [95% CI over items; over seeds]" in html and "mlp:none" in html
    assert "seeds [" not in html  # one seed: no CI over seeds
    assert '<img class="plot" alt="bench plot" src="data:image/png;base64,' in html
    data = _data(html)
    refs = [json.loads(x) for x in (grid / "cells" / "mlp__none__seed0" / "references.jsonl").read_text().splitlines()]
    assert [i["id"] for i in data["items"]] == [r["id"] for r in refs]
    assert [c["group"] for c in data["cells"]] == ["bimamba / none", "mlp / none"]
    for ci, cell in enumerate(data["cells"]):
        preds = {json.loads(x)["id"]: json.loads(x)["prediction"]
                 for x in (grid / "cells" / cell["id"] / "predictions.jsonl").read_text().splitlines()}
        assert [it["preds"][ci] for it in data["items"]] == [preds[it["id"]] for it in data["items"]]
    assert all(it["query"] and it["img"] is not None for it in data["items"])
    assert all(src.startswith("data:image/jpeg;base64,") for src in data["images"].values())
    # the marks are the cells' own per-item exact-match values (cell.json), scored by the
    # exact-match plugin on the run's files, and the kinds are the synthetic set's
    from cora_kit.eval.scoring import read_predictions, read_references
    from cora_kit_builtins.metrics.exact_match import ExactMatch

    for mi, view in enumerate(data["cells"]):
        cell_dir = grid / "cells" / view["id"]
        cell = json.loads((cell_dir / "cell.json").read_text())
        assert view["note"] == ""
        want = ExactMatch().score_items(read_predictions(cell_dir / "predictions.jsonl"),
                                        read_references(cell_dir / "references.jsonl"))
        assert cell["per_item"]["exact-match"] == want
        assert {it["id"]: it["ok"][mi] for it in data["items"]} == {k: bool(v) for k, v in want.items()}
        kinds = {r["kind"] for r in refs}
        assert {f"exact-match/{k}" for k in kinds} <= set(cell["per_item"]) and len(kinds) > 1
    assert [it["kind"] for it in data["items"]] == [r["kind"] for r in refs]


def _with_marks_and_kinds(grid: Path, tmp_path: Path) -> Path:
    """A copy of the grid whose cells carry per-item exact-match values and kinds."""
    bench = tmp_path / "bench"
    shutil.copytree(grid, bench, ignore=shutil.ignore_patterns("feature_cache", ".feature-cache"))
    for k, cell_dir in enumerate(sorted((bench / "cells").iterdir())):
        record = json.loads((cell_dir / "cell.json").read_text())
        record["cell_dir"] = str(cell_dir)
        record["run_dir"] = str(cell_dir)
        preds = [json.loads(x) for x in (cell_dir / "predictions.jsonl").read_text().splitlines()]
        # cell k is right on every (k+1)-th item: the two cells disagree somewhere
        record.setdefault("per_item", {})["exact-match"] = {p["id"]: float(i % (k + 1) == 0) for i, p in enumerate(preds)}
        (cell_dir / "cell.json").write_text(json.dumps(record))
        refs = [json.loads(x) for x in (cell_dir / "references.jsonl").read_text().splitlines()]
        for i, r in enumerate(refs):
            r["kind"] = ("where", "shape", "presence")[i % 3]
        (cell_dir / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    return bench


def test_marks_come_from_the_cells_per_item_values(grid: Path, tmp_path: Path) -> None:
    bench = _with_marks_and_kinds(grid, tmp_path)
    data = _data(build_report(bench))
    kinds = [it["kind"] for it in data["items"]]
    assert kinds[:3] == ["where", "shape", "presence"]
    for ci, cell in enumerate(data["cells"]):
        per_item = json.loads((bench / "cells" / cell["id"] / "cell.json").read_text())["per_item"]["exact-match"]
        assert [it["ok"][ci] for it in data["items"]] == [bool(per_item[it["id"]]) for it in data["items"]]


def test_missing_table_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cells").mkdir()
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "cora-kit bench merge" in capsys.readouterr().err
    assert main(["bench", "report", str(tmp_path / "nope")]) == 2


def test_report_in_a_real_browser(grid: Path, tmp_path: Path, page: Any) -> None:
    bench = _with_marks_and_kinds(grid, tmp_path)
    assert main(["bench", "report", str(bench)]) == 0
    page.goto((bench / "report.html").as_uri())
    rows = page.locator("#examples tbody tr")
    n_items = rows.count()
    assert n_items == len(_data((bench / "report.html").read_text())["items"]) > 3
    assert page.locator("table.scores tbody tr").count() == 2
    assert page.evaluate("document.querySelector('img.plot').naturalWidth") > 100
    assert page.evaluate("[...document.querySelectorAll('#examples img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#examples td.pred.right").count() > 0 and page.locator("#examples td.pred.wrong").count() > 0
    page.screenshot(path=str(artifacts_dir() / "bench-report.png"), full_page=True)
    # filter by kind
    page.select_option("#kind", "shape")
    assert 0 < rows.count() < n_items
    assert all(k == "shape" for k in page.eval_on_selector_all("#examples tbody tr", "rs => rs.map(r => r.dataset.kind)"))
    page.select_option("#kind", "")
    # filter by cell: one column of predictions left
    page.locator(".cell-toggle").first.uncheck()
    assert page.locator("#examples thead th").count() == 2
    assert rows.first.locator("td.pred").count() == 1
    # where the shown cells disagree: with one cell shown, nowhere
    page.check("#disagree")
    assert rows.count() == 0
    page.click("#all-cells")
    assert 0 < rows.count() < n_items
    page.screenshot(path=str(artifacts_dir() / "bench-report-filtered.png"), full_page=True)
    assert not page.errors, page.errors
