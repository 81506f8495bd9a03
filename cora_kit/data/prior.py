"""The text prior: the majority training answer per query template, no image, no model.

It is the chance level of the data card and the run's ``text-prior`` control: what a model
that ignores the panorama can score at best by answering each query template with its most
frequent training answer. Templates come from ``cora_kit.data.kinds.query_template``
(colour, shape and direction words replaced by placeholders); a query whose template never
occurs in training gets the overall majority answer, and ``unseen`` counts those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cora_kit.data.kinds import query_template
from cora_kit.data.text import normalize_answer


def _majority(counts: Counter) -> str:
    """Most frequent answer; ties go to the alphabetically first (deterministic)."""
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class TextPrior:
    """``by_template``: template -> majority answer; ``fallback``: overall majority."""

    by_template: dict[str, str]
    fallback: str
    unseen: set[str] = field(default_factory=set)

    @classmethod
    def fit(cls, pairs: Iterable[tuple[str, str]]) -> TextPrior:
        """From ``(query, answer)`` training pairs (answers compared normalised)."""
        per: dict[str, Counter] = {}
        overall: Counter = Counter()
        for query, answer in pairs:
            a = normalize_answer(answer)
            per.setdefault(query_template(query), Counter())[a] += 1
            overall[a] += 1
        if not overall:
            raise ValueError("the text prior needs at least one training (query, answer) pair")
        return cls({t: _majority(c) for t, c in per.items()}, _majority(overall))

    def predict(self, query: str) -> str:
        """The majority answer of ``query``'s template (the overall one if never seen)."""
        template = query_template(query)
        if template not in self.by_template:
            self.unseen.add(template)
            return self.fallback
        return self.by_template[template]


__all__ = ["TextPrior"]
