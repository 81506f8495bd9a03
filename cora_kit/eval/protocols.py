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
``"implementations"`` in the JSON say what produced them. ``exact-match`` is not a paper
column; asked for under ``paper`` it is scored grouped (the prediction against any
reference of its (image, query), per query kind when kinds are given), and its
``"implementations"`` entry says so. The paper generated once per row;
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
#: metrics outside the paper's columns that the paper protocol scores grouped (name ->
#: what it is); short-answer accuracy is defined against any reference of an item
GROUPED_EXTRAS: dict[str, str] = {
    "exact-match": "exact-match, grouped (not a paper column): the prediction equals any reference of its"
    " (image, query) after normalisation",
}
_EXTRA_ALIASES = {"exact_match": "exact-match", "em": "exact-match"}


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
    """The paper columns asked for (all five by default); ``GROUPED_EXTRAS`` are left out
    (``grouped_extras``); other names are an error."""
    if metrics is None:
        return list(PAPER_METRICS)
    out = []
    for name in metrics:
        if _EXTRA_ALIASES.get(name, name) in GROUPED_EXTRAS:
            continue
        col = _ALIASES.get(name, name.replace("-", "_"))
        if col not in PAPER_METRICS:
            raise CoraKitError(
                f"metric {name!r} is not a column of the paper protocol; columns: {', '.join(PAPER_METRICS)}"
                f" (scored grouped beside them: {', '.join(GROUPED_EXTRAS)})"
            )
        out.append(col)
    return out


def grouped_extras(metrics: Sequence[str] | None) -> list[str]:
    """The ``GROUPED_EXTRAS`` among ``metrics`` (canonical names, in order, once each)."""
    names = [_EXTRA_ALIASES.get(m, m) for m in metrics or ()]
    return list(dict.fromkeys(n for n in names if n in GROUPED_EXTRAS))


def score_protocol(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    protocol: str = "grouped",
    metrics: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    strict: bool = False,
    max_chars: int | None = MAX_CAPTION_CHARS,
    kinds: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Scores as a JSON object: ``{"protocol", <metric>: value (None = NaN), ...,
    "unavailable": {metric: reason}}`` plus ``"num_items"`` (and ``"num_rows"`` and
    ``"implementations"`` for ``paper``; ``"truncated"`` when captions longer than
    ``max_chars`` were cut). ``params`` maps plugin name -> extra plugin params; ``kinds``
    (id -> query kind) adds per-kind values (``exact-match/<kind>``)."""
    check_protocol(protocol)
    if protocol == "grouped":
        report = score(predictions, references, list(metrics or DEFAULT_METRICS), params=params, strict=strict,
                       max_chars=max_chars, kinds=kinds)
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
    out["implementations"] = {c: f"{PAPER_METRICS[c][0]}: {PAPER_METRICS[c][3]}" for c in columns}
    extras = grouped_extras(metrics)
    if extras:
        grouped = score(predictions, references, extras, params=params, strict=strict, max_chars=max_chars,
                        kinds=kinds).to_json()
        unavailable.update(grouped.pop("unavailable", {}))
        out.update({k: v for k, v in grouped.items() if k != "truncated"})
        out["implementations"].update({e: GROUPED_EXTRAS[e] for e in extras})
    out["unavailable"] = unavailable
    if report.truncated:
        out["truncated"] = dict(report.truncated)
    return out


__all__ = [
    "GROUPED_EXTRAS", "PAPER_METRICS", "PROTOCOLS", "check_protocol", "expand_rows", "grouped_extras", "paper_columns",
    "score_protocol",
]
