"""Checks of caption metrics: ``score(predictions {id: text}, references {id: [texts]}) -> {name: float}``."""

from __future__ import annotations

import math
from typing import Any

from cora_kit.interfaces import ItemScoredMetric, TokenizedMetric
from cora_kit.testing.base import CheckFailure, CheckSkipped, Subject, expect, register

REFS = {
    "img1#q": ["a red car parked on a quiet street", "a red car on the street near houses"],
    "img2#q": ["two dogs run across a green park", "dogs playing in a grassy park"],
    "img3#q": ["a kitchen with a white table and chairs", "white table in a bright kitchen"],
    "img4#q": ["a beach with blue water and palm trees", "palm trees along a sandy beach"],
}
GOOD = {k: v[0] for k, v in REFS.items()}


def available_metric(s: Subject) -> Any:
    """A fresh metric; ``CheckSkipped`` with its reason when ``available()`` is false."""
    metric = s.make()
    ok, reason = metric.available()
    if not ok:
        raise CheckSkipped(f"{s.label} unavailable here: {reason}")
    return metric


def headline(s: Subject, scores: Any) -> float:
    """The first value of a ``{str: float}`` score dict (failure if it is not one)."""
    expect(isinstance(scores, dict) and scores and all(isinstance(k, str) and isinstance(v, float) for k, v in scores.items()),
           f"{s.label} returned {scores!r}; expected a non-empty dict[str, float]")
    return next(iter(scores.values()))


def check_grouped_references(s: Subject) -> str | None:
    """Grouped references: exact match beats unrelated text, reference order does not matter."""
    metric = available_metric(s)
    bad = {k: "purple quantum violin" for k in REFS}
    scores = metric.score(GOOD, REFS)
    s.cache["metric_scores"] = scores
    hi, lo = headline(s, scores), headline(s, metric.score(bad, REFS))
    expect(math.isfinite(hi) and hi > lo, f"{s.label}: scored {hi:.4g} for predictions equal to a reference and"
           f" {lo:.4g} for unrelated ones; expected higher for the matches")
    flipped = {k: list(reversed(v)) for k, v in REFS.items()}
    hi2 = headline(s, metric.score(GOOD, flipped))
    expect(abs(hi2 - hi) < 1e-6, f"{s.label}: reversing each reference group changed the score {hi:.6g} -> {hi2:.6g};"
           " expected order independence")
    return f"match {hi:.4g}, unrelated {lo:.4g}"


def check_rejects_mismatched_ids(s: Subject) -> str | None:
    """A prediction whose id has no references raises ValueError naming the id."""
    metric = available_metric(s)
    preds = GOOD | {"ghost#q": "a ghost"}
    try:
        metric.score(preds, REFS)
    except ValueError as exc:
        expect("ghost#q" in str(exc), f"{s.label} raised '{exc}'; expected the message to name the id 'ghost#q'")
        return None
    raise CheckFailure(f"{s.label} scored a prediction id without references; expected ValueError naming 'ghost#q'")


def check_determinism(s: Subject) -> str | None:
    """Scoring the same input twice (two instances) gives the same numbers."""
    metric = available_metric(s)
    a = s.cache.get("metric_scores") or metric.score(GOOD, REFS)
    b = s.make().score(GOOD, REFS)
    expect(a == b, f"{s.label} gave {a} then {b}; expected identical")
    return None


def check_tokenized_matches_score(s: Subject) -> str | None:
    """A ``TokenizedMetric``: ``score_tokenized(*tokenize(p, r))`` equals ``score(p, r)``
    (the scorer tokenises once for all metrics sharing ``tokenizer_key``)."""
    metric = available_metric(s)
    if not isinstance(metric, TokenizedMetric):
        raise CheckSkipped("not a TokenizedMetric (no tokenizer_key / tokenize / score_tokenized)")
    expect(isinstance(metric.tokenizer_key, str), f"{s.label}.tokenizer_key is {metric.tokenizer_key!r}; expected a str")
    res, gts = metric.tokenize(GOOD, REFS)
    expect(set(res) == set(GOOD) and set(gts) == set(REFS), f"{s.label}.tokenize returned ids {sorted(res)} / {sorted(gts)};"
           f" expected {sorted(REFS)}")
    a, b = metric.score_tokenized(res, gts), metric.score(GOOD, REFS)
    expect(a == b, f"{s.label}: score_tokenized(*tokenize(...)) gave {a}, score(...) gave {b}; expected the same")
    if isinstance(metric, ItemScoredMetric):
        items = metric.score_items_tokenized(res, gts)
        expect(isinstance(items, dict) and set(items) == set(REFS) and all(isinstance(v, float) for v in items.values()),
               f"{s.label}.score_items_tokenized returned {items!r}; expected {{id: float}} for every id")
    return f"tokenizer {metric.tokenizer_key.split(':')[0]}"


def check_background_lifecycle(s: Subject) -> str | None:
    """A ``background`` metric scores between ``start()`` and ``close()`` as ``score`` does alone;
    ``key`` is None or a str."""
    metric = available_metric(s)
    expect(metric.key is None or isinstance(metric.key, str), f"{s.label}.key is {metric.key!r}; expected None or a str")
    if not metric.background:
        raise CheckSkipped("not a background metric (background = False)")
    metric.start()
    try:
        got = metric.score(GOOD, REFS)
    finally:
        metric.close()
    want = s.cache.get("metric_scores") or s.make().score(GOOD, REFS)
    expect(got == want, f"{s.label} gave {got} between start() and close(), {want} alone; expected the same")
    return None


for _func in (check_grouped_references, check_rejects_mismatched_ids, check_determinism,
              check_tokenized_matches_score, check_background_lifecycle):
    register(_func, ["metric"])
