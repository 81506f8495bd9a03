"""METEOR as implemented by NLTK (``meteor_nltk``): mean of sentence scores.

Needs the NLTK WordNet corpus; ``nltk.download`` cannot run offline, so when it is
absent the metric is unavailable with the reason (``cora-kit eval setup-wordnet``
builds it from Debian's ``wordnet-base`` + ``wordnet-sense-index``). Captions are
lowercased and split on whitespace (NLTK's METEOR takes pre-tokenised input); NLTK's
defaults otherwise
(alpha 0.9, beta 3, gamma 0.5, Porter stemmer). Not the same numbers as COCO ``meteor``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cora_kit.eval.scoring import check_grouped
from cora_kit.interfaces import Metric


def wordnet_unavailable_reason() -> str | None:
    """None when NLTK can find its WordNet corpus, else an "unavailable: ..." reason."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(resource)
            return None
        except LookupError:
            continue
    return (
        "unavailable: NLTK WordNet corpus not found (searched "
        + ", ".join(nltk.data.path)
        + "); apt-get install wordnet-base wordnet-sense-index, then 'cora-kit eval setup-wordnet'"
    )


class MeteorNltk(Metric):
    """METEOR from nltk.translate.meteor_score (needs the WordNet corpus offline)."""

    key = "meteor_nltk"

    def available(self) -> tuple[bool, str | None]:
        reason = wordnet_unavailable_reason()
        return reason is None, reason

    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        check_grouped(predictions, references)
        reason = wordnet_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        from nltk.translate.meteor_score import meteor_score

        total = 0.0
        for key, hyp in predictions.items():
            refs = [r.lower().split() for r in references[key]]
            total += meteor_score(refs, hyp.lower().split())
        return {"meteor_nltk": total / len(predictions)}
