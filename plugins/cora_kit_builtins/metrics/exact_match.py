"""Exact match for short answers (``exact-match``), overall and per query kind.

A prediction is correct when, after normalisation (lower-case, punctuation removed,
whitespace collapsed), it equals the normalisation of ANY reference of its item. The score
is the fraction of correct items, in [0, 1].

When the data names each item's kind (the optional ``kind`` column of a dataset, the
``"kind"`` field of ``references.jsonl``), ``score_kinds`` adds one value per kind,
``exact-match/<kind>``: the fraction of correct items among the items of that kind. Items
without a kind count in the overall value only.

Short answers (1-7 words) are what the synthetic set asks for; CIDEr on them is noisy, so
the embedded benchmark reads exact match first (DESIGN.md section 11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cora_kit.data.text import matches
from cora_kit.eval.scoring import check_grouped
from cora_kit.interfaces import Metric

KEY = "exact-match"


def kind_key(kind: str) -> str:
    """The score key of one kind: ``exact-match/<kind>``."""
    return f"{KEY}/{kind}"


class ExactMatch(Metric):
    """Fraction of predictions equal (normalised) to one of their item's references."""

    key = KEY

    def score_items(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        """``{id: 1.0 or 0.0}`` in the order of ``predictions``."""
        check_grouped(predictions, references)
        return {key: float(matches(text, references[key])) for key, text in predictions.items()}

    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        items = self.score_items(predictions, references)
        return {KEY: sum(items.values()) / len(items)}

    def score_kinds(
        self,
        predictions: Mapping[str, str],
        references: Mapping[str, Sequence[str]],
        kinds: Mapping[str, str | None],
    ) -> dict[str, float]:
        """The overall value plus ``exact-match/<kind>`` for every kind named in ``kinds``
        (id -> kind; ids missing from it, or mapped to None, have no kind), sorted by kind."""
        items = self.score_items(predictions, references)
        out = {KEY: sum(items.values()) / len(items)}
        by_kind: dict[str, list[float]] = {}
        for key, value in items.items():
            kind = kinds.get(key)
            if kind:
                by_kind.setdefault(kind, []).append(value)
        for kind in sorted(by_kind):
            values = by_kind[kind]
            out[kind_key(kind)] = sum(values) / len(values)
        return out
