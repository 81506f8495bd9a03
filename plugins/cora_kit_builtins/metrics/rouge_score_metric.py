"""ROUGE-L by Google's ``rouge-score`` package (``rouge-score``): the CORA paper's ROUGE-L.

Mean over predictions of the LCS F-measure; with several references, the best one
(``RougeScorer.score_multi``). Its own tokenizer (lowercase, non-alphanumerics dropped)
and, by default, the Porter stemmer (``use_stemmer=True``, as the paper's code). Not the
COCO ``rouge-l`` (PTB tokens, beta 1.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from cora_kit.eval.scoring import check_grouped
from cora_kit.interfaces import Metric, PluginParams


class RougeScoreParams(PluginParams):
    """rouge_score.rouge_scorer.RougeScorer options."""

    use_stemmer: bool = Field(True, description="Porter-stem tokens (the paper's setting)")
    rouge_type: Literal["rougeL", "rougeLsum"] = Field("rougeL", description="ROUGE variant")


def rouge_score_unavailable_reason() -> str | None:
    try:
        import rouge_score.rouge_scorer  # noqa: F401
    except ImportError as exc:
        return f"unavailable: the rouge-score package is not installed ({exc}); pip install rouge-score"
    return None


class RougeScore(Metric):
    """Mean ROUGE-L F-measure computed by rouge-score (max over each item's references)."""

    key = "rouge_score"

    def __init__(self, use_stemmer: bool = True, rouge_type: str = "rougeL") -> None:
        self.use_stemmer, self.rouge_type = use_stemmer, rouge_type

    def available(self) -> tuple[bool, str | None]:
        reason = rouge_score_unavailable_reason()
        return reason is None, reason

    def _scorer(self):
        reason = rouge_score_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=self.use_stemmer)

    def score_items(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        """F-measure per id."""
        check_grouped(predictions, references)
        scorer = self._scorer()
        return {
            k: float(scorer.score_multi(list(references[k]), p)[self.rouge_type].fmeasure)
            for k, p in predictions.items()
        }

    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        items = self.score_items(predictions, references)
        return {"rouge_score": sum(items.values()) / len(items)}
