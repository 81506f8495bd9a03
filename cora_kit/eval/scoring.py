"""Score caption predictions against grouped references with metric plugins.

Grouped references: every id (one (image, query) pair) maps to ALL its reference
captions, ``{id: [ref, ...]}``; each prediction is scored against the whole group (the
CORA paper's code scored each prediction against one reference row).

Metrics that share a tokenisation (the COCO metrics: PTB tokenizer) are tokenised once:
a metric taking part implements the optional ``cora_kit.interfaces.TokenizedMetric``
protocol (``TokenizedMetric`` stays importable from here). A metric
that cannot run (``available()`` false, or it raises ``RuntimeError``/``OSError`` while
scoring, e.g. a java timeout) gets NaN and a reason; it is never dropped or replaced.

File formats (JSON Lines, one object a line, blank lines ignored):

- predictions: ``{"id": ..., "prediction": "..."}``, one row per id; ``""`` is scored.
- references: ``{"id": ..., "references": ["...", ...]}`` (one row per id) or
  ``{"id": ..., "reference": "..."}`` (several rows per id, grouped in file order).
  Either form may carry the item's query ``"kind"`` (a string; optional): metrics that
  report per kind (``exact-match/<kind>``) read it with ``read_kinds``.
Ids are strings or integers (integers are compared as their decimal string).

Captions longer than ``MAX_CAPTION_CHARS`` characters (predictions or references) are
truncated to it before scoring, with a ``RuntimeWarning`` and a ``"truncated"`` entry in
the report: METEOR's alignment grows far faster than the text (one 100,000-character
caption took 379 s and 4.6 GB), and no caption of a captioning benchmark comes near it.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cora_kit.errors import CoraKitError, DataError
from cora_kit.interfaces import ItemScoredMetric, KindScoredMetric, Metric, PerItemMetric, TokenizedMetric

#: the paper's five metrics (QuIC-360 table), in its column order, then exact match
#: (short answers; per query kind when the data names kinds)
DEFAULT_METRICS: tuple[str, ...] = ("bleu4", "meteor", "rouge_l", "cider", "spice", "exact-match")
#: longest caption scored as it is (characters); longer ones are truncated with a warning
MAX_CAPTION_CHARS = 2000
_SHOWN_IDS = 5


# --- validation ---------------------------------------------------------------


def _few(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > _SHOWN_IDS else "")


def check_grouped(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> None:
    """Raise ``DataError`` unless both map the same ids to str / non-empty list of str."""
    if not predictions and not references:
        raise DataError("nothing to score: no predictions and no references")
    missing = set(predictions) - set(references)
    unpredicted = set(references) - set(predictions)
    if missing or unpredicted:
        parts = []
        if missing:
            parts.append(f"{len(missing)} predicted id(s) have no references: {_few(missing)}")
        if unpredicted:
            parts.append(
                f"{len(unpredicted)} referenced id(s) have no prediction: {_few(unpredicted)}"
            )
        raise DataError("; ".join(parts))
    for key, text in predictions.items():
        if not isinstance(text, str):
            raise DataError(f"prediction of id {key!r} must be a string, got {type(text).__name__}")
    for key, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise DataError(f"references of id {key!r} must be a non-empty list of strings")
        if not all(isinstance(r, str) for r in refs):
            raise DataError(f"references of id {key!r} must all be strings")


# --- files --------------------------------------------------------------------


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                kind = type(row).__name__
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {kind}")
            yield lineno, row


def _row_id(path: Path, lineno: int, row: Mapping[str, Any]) -> str:
    if "id" not in row:
        raise DataError(f"{path}:{lineno}: missing field 'id'")
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{path}:{lineno}: field 'id' must be a string or integer, got {value!r}")
    return str(value)


def read_predictions(path: str | Path) -> dict[str, str]:
    """``{id: prediction}`` from a predictions JSONL file (errors name file and line)."""
    path = Path(path)
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for lineno, row in _rows(path):
        key = _row_id(path, lineno, row)
        if "prediction" not in row:
            raise DataError(f"{path}:{lineno}: missing field 'prediction'")
        text = row["prediction"]
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{lineno}: field 'prediction' must be a string (use \"\" for an empty"
                f" caption), got {text!r}"
            )
        if key in out:
            raise DataError(f"{path}:{lineno}: duplicate id {key!r} (first on line {first[key]})")
        out[key], first[key] = text, lineno
    if not out:
        raise DataError(f"{path}: no predictions")
    return out


def read_references(path: str | Path) -> dict[str, list[str]]:
    """``{id: [reference, ...]}`` from a references JSONL file (both row forms)."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    listed: dict[str, int] = {}  # ids given with "references": line
    for lineno, row in _rows(path):
        key = _row_id(path, lineno, row)
        if "references" in row:
            refs = row["references"]
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise DataError(
                    f"{path}:{lineno}: field 'references' must be a non-empty list of strings"
                )
            if key in out:
                where = listed.get(key)
                raise DataError(
                    f"{path}:{lineno}: id {key!r} already has references"
                    + (f" (line {where})" if where else " from 'reference' rows")
                )
            out[key], listed[key] = list(refs), lineno
        elif "reference" in row:
            ref = row["reference"]
            if not isinstance(ref, str):
                raise DataError(f"{path}:{lineno}: field 'reference' must be a string, got {ref!r}")
            if key in listed:
                raise DataError(
                    f"{path}:{lineno}: id {key!r} already has a 'references' list"
                    f" (line {listed[key]}); use one form per id"
                )
            out.setdefault(key, []).append(ref)
        else:
            raise DataError(f"{path}:{lineno}: missing field 'references' (list) or 'reference'")
    if not out:
        raise DataError(f"{path}: no references")
    return out


def read_kinds(path: str | Path) -> dict[str, str]:
    """``{id: kind}`` of the references JSONL rows that carry a ``"kind"`` (empty when none
    does); one id with two different kinds is a DataError naming the line."""
    path = Path(path)
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for lineno, row in _rows(path):
        if row.get("kind") is None:
            continue
        key = _row_id(path, lineno, row)
        kind = row["kind"]
        if not isinstance(kind, str) or not kind.strip():
            raise DataError(f"{path}:{lineno}: field 'kind' must be a non-empty string, got {kind!r}")
        if key in out and out[key] != kind:
            raise DataError(
                f"{path}:{lineno}: id {key!r} has kind {kind!r} here and {out[key]!r} on line {first[key]}"
            )
        out.setdefault(key, kind)
        first.setdefault(key, lineno)
    return out


# --- scoring ------------------------------------------------------------------


@dataclass
class ScoreReport:
    """Result of ``score``: values (NaN where unavailable), reasons and timings."""

    values: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    count: int = 0
    #: {"max_chars", "predictions": n, "references": n, "ids": [first ids]} when any was cut
    truncated: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """metric -> value (NaN as null) plus ``"unavailable"``: metric -> reason (and
        ``"truncated"`` when captions were cut to ``MAX_CAPTION_CHARS``)."""
        out: dict[str, Any] = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.values.items()
        }
        out["unavailable"] = dict(self.unavailable)
        if self.truncated:
            out["truncated"] = dict(self.truncated)
        return out


def truncate_captions(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], max_chars: int | None
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Any]]:
    """Predictions and references cut to ``max_chars`` characters (None: unchanged);
    returns them and what was cut (empty when nothing was)."""
    preds = dict(predictions)
    refs = {k: list(v) for k, v in references.items()}
    if max_chars is None:
        return preds, refs, {}
    if max_chars < 1:
        raise DataError(f"max_chars must be >= 1; got {max_chars}")
    cut_preds = [k for k, t in preds.items() if len(t) > max_chars]
    cut_refs = [k for k, rs in refs.items() if any(len(r) > max_chars for r in rs)]
    if not cut_preds and not cut_refs:
        return preds, refs, {}
    for k in cut_preds:
        preds[k] = preds[k][:max_chars]
    for k in cut_refs:
        refs[k] = [r[:max_chars] for r in refs[k]]
    info = {"max_chars": max_chars, "predictions": len(cut_preds), "references": len(cut_refs),
            "ids": sorted(set(cut_preds) | set(cut_refs))[:_SHOWN_IDS]}
    warnings.warn(
        f"scoring: {len(cut_preds)} prediction(s) and the references of {len(cut_refs)} id(s) are longer than"
        f" {max_chars} characters and were truncated to it (ids {_few(set(cut_preds) | set(cut_refs))});"
        f" their scores describe the first {max_chars} characters only",
        RuntimeWarning, stacklevel=3,
    )
    return preds, refs, info


def metric_key(metric: Metric, name: str) -> str:
    """The headline key of a metric: its ``key`` attribute, else ``name`` with ``_``."""
    return str(metric.key or name.replace("-", "_"))


def build_metric(name: str, params: Mapping[str, Any] | None = None) -> Metric:
    """Metric plugin ``name`` built with ``params``; a ``CoraKitError`` when the plugin does
    not implement ``cora_kit.interfaces.Metric``."""
    from cora_kit.registry import REGISTRY

    metric = REGISTRY.create("metric", name, **dict(params or {}))
    if not isinstance(metric, Metric):
        raise CoraKitError(
            f"metric '{name}' built a {type(metric).__name__}, which does not implement"
            f" cora_kit.interfaces.Metric; run 'cora-kit check-plugin {name}'"
        )
    return metric


def metric_unavailable_reason(name: str) -> str | None:
    """Why metric ``name`` (default parameters) cannot run here, or None when it can."""
    ok, reason = build_metric(name).available()
    return None if ok else (reason or "unavailable: no reason given")


def _build_all(
    metrics: Sequence[str], params: Mapping[str, Mapping[str, Any]], report: ScoreReport,
    results: dict[str, dict[str, float]],
) -> tuple[list[str], list[tuple[str, Metric]]]:
    """(headline keys in order, available metrics); unavailable ones get NaN + reason."""
    order: list[str] = []
    built: list[tuple[str, Metric]] = []
    for name in metrics:
        metric = build_metric(name, params.get(name))
        key = metric_key(metric, name)
        order.append(key)
        ok, reason = metric.available()
        if ok:
            built.append((key, metric))
        else:
            results[key] = {key: math.nan}
            report.unavailable[key] = reason or "unavailable: no reason given"
    return order, built


def score(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    strict: bool = False,
    kinds: Mapping[str, str | None] | None = None,
    max_chars: int | None = MAX_CAPTION_CHARS,
) -> ScoreReport:
    """Score ``predictions`` against grouped ``references`` with metric plugins.

    ``params`` maps a metric name to its plugin parameters. ``kinds`` (id -> query kind)
    makes metrics with ``score_kinds`` (``KindScoredMetric``) report per kind too. ``strict`` re-raises a
    metric's failure instead of recording NaN + reason. ``background`` metrics (java
    processes) are started first and scored on a worker thread, so their JVM start
    overlaps with tokenisation and the pure-Python metrics. Captions longer than
    ``max_chars`` are truncated with a warning (None: never).
    """
    check_grouped(predictions, references)
    predictions, references, truncated = truncate_captions(predictions, references, max_chars)
    report = ScoreReport(count=len(predictions), truncated=truncated)
    results: dict[str, dict[str, float]] = {}
    order, built = _build_all(metrics, params or {}, report, results)
    background = [(k, m) for k, m in built if m.background]
    try:
        for key, metric in background:
            _guard(report, results, key, strict, metric.start)
        tokens = _tokenize_shared(built, predictions, references, report, strict)

        def run(key: str, metric: Metric) -> None:
            if key not in results:  # else: failed to start
                _score_one(key, metric, tokens, predictions, references, report, results, strict, kinds)

        with ThreadPoolExecutor(max_workers=max(len(background), 1)) as pool:
            futures = [pool.submit(run, k, m) for k, m in background]
            for key, metric in built:
                if not metric.background:
                    run(key, metric)
            for future in futures:
                future.result()
    finally:
        for _, metric in background:
            metric.close()
    for key in order:
        for name, value in results.get(key, {}).items():
            report.values[name] = float(value)
    return report


def _score_one(
    key: str, metric: Metric, tokens: Mapping[str, Any], predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]], report: ScoreReport, results: dict[str, dict[str, float]], strict: bool,
    kinds: Mapping[str, str | None] | None = None,
) -> None:
    """Score one metric (on the shared tokens when it takes them) into ``results``."""
    t0 = time.perf_counter()
    if isinstance(metric, TokenizedMetric):
        tok = tokens[metric.tokenizer_key]
        if isinstance(tok, str):  # the shared tokenisation failed: its message
            _guard(report, results, key, strict, _raise, tok)
        else:
            _guard(report, results, key, strict, metric.score_tokenized, *tok)
    elif kinds and isinstance(metric, KindScoredMetric):
        _guard(report, results, key, strict, metric.score_kinds, predictions, references, kinds)
    else:
        _guard(report, results, key, strict, metric.score, predictions, references)
    report.seconds[key] = time.perf_counter() - t0


def per_item_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    kinds: Mapping[str, str | None] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per-id scores for paired comparisons (bootstrap CIs): ``({metric: {id: value}},
    {metric: reason})``. Metrics offering ``score_items_tokenized`` (BLEU-4, ROUGE-L,
    CIDEr) share one tokenisation; ``score_items`` (``exact-match``) needs none; the
    others are listed with the reason they have none. With ``kinds`` (id -> kind), a
    metric that reports per kind (``KindScoredMetric``) also gets ``<key>/<kind>``: the
    values of that kind's ids only (their mean is the per-kind score). Captions are
    truncated as in ``score``.
    """
    check_grouped(predictions, references)
    predictions, references, _ = truncate_captions(predictions, references, MAX_CAPTION_CHARS)
    out: dict[str, dict[str, float]] = {}
    missing: dict[str, str] = {}
    tokens: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {}
    for name in metrics:
        metric = build_metric(name)
        key = metric_key(metric, name)
        ok, reason = metric.available()
        if not ok:
            missing[key] = reason or "unavailable"
            continue
        if isinstance(metric, ItemScoredMetric):
            tk = metric.tokenizer_key
            if tk not in tokens:
                tokens[tk] = metric.tokenize(predictions, references)
            out[key] = metric.score_items_tokenized(*tokens[tk])
        elif isinstance(metric, PerItemMetric):
            out[key] = metric.score_items(predictions, references)
        else:
            missing[key] = "no per-item scores for this metric"
            continue
        if kinds and isinstance(metric, KindScoredMetric):
            for kind in sorted({k for k in kinds.values() if k}):
                out[f"{key}/{kind}"] = {i: v for i, v in out[key].items() if kinds.get(i) == kind}
    return out, missing


def _raise(message: str) -> None:
    raise RuntimeError(message)


def _guard(
    report: ScoreReport,
    results: dict[str, dict[str, float]],
    key: str,
    strict: bool,
    fn: Any,
    *args: Any,
) -> None:
    """Call ``fn``; a RuntimeError/OSError becomes NaN + "failed: ..." (unless strict)."""
    try:
        out = fn(*args)
    except (RuntimeError, OSError) as exc:
        if strict:
            raise
        results[key] = {key: math.nan}
        report.unavailable[key] = f"failed: {exc}"
        return
    if isinstance(out, dict):
        results[key] = out


def _tokenize_shared(
    built: Sequence[tuple[str, Any]],
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    report: ScoreReport,
    strict: bool,
) -> dict[str, Any]:
    """One tokenisation per ``tokenizer_key``: key -> (res, gts) or a failure message."""
    shared: dict[str, Any] = {}
    for _, metric in built:
        if not isinstance(metric, TokenizedMetric) or metric.tokenizer_key in shared:
            continue
        tk = metric.tokenizer_key
        t0 = time.perf_counter()
        try:
            shared[tk] = metric.tokenize(predictions, references)
        except (RuntimeError, OSError) as exc:
            if strict:
                raise
            shared[tk] = f"tokenizer failed: {exc}"
        label = f"tokenize:{tk.split(':')[0]}"
        report.seconds[label] = report.seconds.get(label, 0.0) + time.perf_counter() - t0
    return shared


def score_files(
    predictions: str | Path,
    references: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    **kwargs: Any,
) -> ScoreReport:
    """``score`` on a predictions and a references JSONL file; the references' ``kind``
    fields (when present) give the per-kind values."""
    kwargs.setdefault("kinds", read_kinds(references) or None)
    return score(read_predictions(predictions), read_references(references), metrics, **kwargs)
