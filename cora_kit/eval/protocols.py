"""Scoring protocols: how predictions meet references.

``grouped`` (cora-kit's default): one prediction per (image, query) against ALL its
references, with the configured metric plugins (COCO metrics: pycocoevalcap on PTB tokens).

``paper`` (the CORA paper's code): every reference row is scored on its own, the
(image, query)'s prediction against that row's one reference, with the paper's
implementations of its five columns:

| column  | plugin        | implementation                                                    |
|---------|---------------|-------------------------------------------------------------------|
| bleu4   | sacrebleu     | sacrebleu corpus BLEU, 13a, exp smoothing, effective order, / 100 |
| meteor  | meteor-nltk   | NLTK ``meteor_score`` per row, mean (needs WordNet)               |
| rouge_l | rouge-score   | rouge-score ROUGE-L F, Porter stemmer, per row, mean              |
| cider   | cider         | pycocoevalcap CIDEr-D on PTB tokens, one reference per row        |
| spice   | spice         | pycocoevalcap SPICE, one reference per row (needs CoreNLP jars)   |

Values keep the paper's column names, so tables line up; ``"protocol"`` and
``"implementations"`` in the JSON say what produced them. The paper generated once per row;
with greedy decoding the rows of one (image, query) get the same caption, which is what
expanding the grouped prediction to its rows does. A metric that cannot run is NaN with a
reason (never replaced by another implementation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cora_kit.errors import CoraKitError
from cora_kit.eval.scoring import DEFAULT_METRICS, MAX_CAPTION_CHARS, check_grouped, score

PROTOCOLS: tuple[str, ...] = ("grouped", "paper")
#: paper column -> (metric plugin, its parameters, its score key, what it is)
PAPER_METRICS: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "bleu4": ("sacrebleu", {"effective_order": True}, "sacrebleu",
              "sacrebleu corpus BLEU-4 (13a, exp smoothing, effective order)"),
    "meteor": ("meteor-nltk", {}, "meteor_nltk", "NLTK meteor_score, mean over rows"),
    "rouge_l": ("rouge-score", {"use_stemmer": True}, "rouge_score",
                "rouge-score ROUGE-L F (Porter stemmer), mean over rows"),
    "cider": ("cider", {}, "cider", "pycocoevalcap CIDEr-D (PTB tokens)"),
    "spice": ("spice", {}, "spice", "pycocoevalcap SPICE"),
}
_ALIASES = {"rouge-l": "rouge_l", "rougel": "rouge_l", "bleu": "bleu4", "cider-d": "cider"}


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise CoraKitError(f"unknown scoring protocol {name!r}; one of {', '.join(PROTOCOLS)}")
    return name


def expand_rows(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """One row per reference: ``("<id>#<k>" -> prediction of id, "<id>#<k>" -> [k-th reference])``."""
    check_grouped(predictions, references)
    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for key, group in references.items():
        for k, ref in enumerate(group):
            row = f"{key}#{k}"
            preds[row], refs[row] = predictions[key], [ref]
    return preds, refs


def paper_columns(metrics: Sequence[str] | None = None) -> list[str]:
    """The paper columns asked for (all five by default); unknown names are an error."""
    if metrics is None:
        return list(PAPER_METRICS)
    out = []
    for name in metrics:
        col = _ALIASES.get(name, name.replace("-", "_"))
        if col not in PAPER_METRICS:
            raise CoraKitError(
                f"metric {name!r} is not a column of the paper protocol; columns: {', '.join(PAPER_METRICS)}"
            )
        out.append(col)
    return out


def score_protocol(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    protocol: str = "grouped",
    metrics: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    strict: bool = False,
    max_chars: int | None = MAX_CAPTION_CHARS,
) -> dict[str, Any]:
    """Scores as a JSON object: ``{"protocol", <metric>: value (None = NaN), ...,
    "unavailable": {metric: reason}}`` plus ``"num_items"`` (and ``"num_rows"`` and
    ``"implementations"`` for ``paper``; ``"truncated"`` when captions longer than
    ``max_chars`` were cut). ``params`` maps plugin name -> extra plugin params."""
    check_protocol(protocol)
    if protocol == "grouped":
        report = score(predictions, references, list(metrics or DEFAULT_METRICS), params=params, strict=strict,
                       max_chars=max_chars)
        return {"protocol": "grouped", "num_items": report.count, **report.to_json()}
    columns = paper_columns(metrics)
    rows_p, rows_r = expand_rows(predictions, references)
    plugins = [PAPER_METRICS[c][0] for c in columns]
    merged = {
        PAPER_METRICS[c][0]: {**PAPER_METRICS[c][1], **dict((params or {}).get(PAPER_METRICS[c][0], {}))}
        for c in columns
    }
    report = score(rows_p, rows_r, plugins, params=merged, strict=strict, max_chars=max_chars)
    out: dict[str, Any] = {"protocol": "paper", "num_items": len(predictions), "num_rows": len(rows_p)}
    unavailable: dict[str, str] = {}
    for col in columns:
        key = PAPER_METRICS[col][2]
        value = report.values.get(key, math.nan)
        out[col] = None if math.isnan(value) else value
        if key in report.unavailable:
            unavailable[col] = report.unavailable[key]
    out["unavailable"] = unavailable
    out["implementations"] = {c: f"{PAPER_METRICS[c][0]}: {PAPER_METRICS[c][3]}" for c in columns}
    if report.truncated:
        out["truncated"] = dict(report.truncated)
    return out


__all__ = ["PAPER_METRICS", "PROTOCOLS", "check_protocol", "expand_rows", "paper_columns", "score_protocol"]
