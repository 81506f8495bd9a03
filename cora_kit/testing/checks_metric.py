"""Checks of caption metrics: ``score(predictions {id: text}, references {id: [texts]}) -> {name: float}``."""

from __future__ import annotations

import math
from typing import Any

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


for _func in (check_grouped_references, check_rejects_mismatched_ids, check_determinism):
    register(_func, ["metric"])
