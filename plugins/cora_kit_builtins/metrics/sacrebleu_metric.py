"""Corpus BLEU via sacrebleu (``sacrebleu``), on grouped references.

Differs from the COCO ``bleu4`` by design: sacrebleu's own tokenizer (13a by default)
on the raw captions, corpus-level brevity penalty against the closest reference length,
a variable number of references per prediction. Reported on a 0-1 scale (sacrebleu's
score / 100) so it sits beside the COCO metrics; the signature is in ``signature()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import Field

from cora_kit.eval.scoring import check_grouped
from cora_kit.interfaces import Metric, PluginParams


class SacreBleuParams(PluginParams):
    """sacrebleu BLEU options (see sacrebleu.metrics.BLEU)."""

    tokenize: str = Field("13a", description="sacrebleu tokenizer: 13a, none, intl, char, ...")
    lowercase: bool = Field(False, description="lowercase before scoring")
    effective_order: bool = Field(
        False, description="average only the n-gram orders that occur (the paper's code sets it)"
    )


class SacreBleu(Metric):
    """Corpus BLEU-4 computed by sacrebleu (0-1 scale), variable references per item."""

    key = "sacrebleu"

    def __init__(self, tokenize: str = "13a", lowercase: bool = False, effective_order: bool = False) -> None:
        from sacrebleu.metrics import BLEU

        self._bleu = BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=effective_order)

    def signature(self) -> str:
        return str(self._bleu.get_signature())

    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        check_grouped(predictions, references)
        ids = list(predictions)
        width = max(len(references[i]) for i in ids)
        # reference stream j holds the j-th reference of every item (None where absent)
        streams = [
            [references[i][j] if j < len(references[i]) else None for i in ids]
            for j in range(width)
        ]
        result = self._bleu.corpus_score([predictions[i] for i in ids], streams)
        return {"sacrebleu": float(result.score) / 100.0}
