"""COCO-caption metrics via pycocoevalcap: BLEU-1..4, ROUGE-L, CIDEr (+ the shared base).

Standard COCO protocol (``pycocoevalcap.eval.COCOEvalCap``): predictions and grouped
references are PTB-tokenised (``ptb.py``), then each scorer runs on the tokens.
``cora_kit.eval.scoring`` tokenises once for all metrics with the same
``tokenizer_key`` (``score_tokenized``); ``score`` alone tokenises itself.

Values are pycocoevalcap's, unscaled: BLEU/ROUGE-L in [0, 1], CIDEr (CIDEr-D) in [0, 10].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import Field

from cora_kit.eval.scoring import check_grouped
from cora_kit.interfaces import Metric, PluginParams
from cora_kit_builtins.metrics.java import (
    DEFAULT_TIMEOUT_S,
    find_java,
    java_unavailable_reason,
)
from cora_kit_builtins.metrics.ptb import ptb_jar, ptb_tokenize_groups


class CocoParams(PluginParams):
    """Parameters of the PTB-tokenised COCO metrics."""

    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, description="java timeout (s)")
    java: str | None = Field(None, description="java executable (default: CORA_KIT_JAVA or PATH)")


class CocoMetric(Metric):
    """Base: PTB tokenisation (java) + a pycocoevalcap scorer on ``{id: [str]}`` dicts."""

    key = "coco"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, java: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.java = java

    @property
    def tokenizer_key(self) -> str:
        return f"ptb:{find_java(self.java)}:{ptb_jar()}"

    def available(self) -> tuple[bool, str | None]:
        reason = java_unavailable_reason(self.java)
        if reason is None:
            try:
                jar = ptb_jar()
            except ImportError as exc:
                return False, f"unavailable: pycocoevalcap is not installed ({exc})"
            if not jar.is_file():
                reason = f"unavailable: PTB tokenizer jar missing: {jar}"
        return (reason is None), reason

    def tokenize(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """-> (``{id: [tokenised prediction]}``, ``{id: [tokenised references]}``)."""
        res, gts = ptb_tokenize_groups(
            [{k: [v] for k, v in predictions.items()}, references],
            timeout_s=self.timeout_s,
            java=self.java,
        )
        return res, gts

    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> dict[str, float]:
        check_grouped(predictions, references)
        ok, reason = self.available()
        if not ok:
            raise RuntimeError(reason)
        return self.score_tokenized(*self.tokenize(predictions, references))

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        raise NotImplementedError


class Bleu4(CocoMetric):
    """BLEU-4 (COCO, 'closest' reference length); BLEU-1..3 as details."""

    key = "bleu4"

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu

        values, _ = Bleu(4).compute_score(dict(gts), dict(res), verbose=0)
        return {
            "bleu4": float(values[3]),
            "bleu1": float(values[0]),
            "bleu2": float(values[1]),
            "bleu3": float(values[2]),
        }

    def score_items_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        """Sentence-level BLEU-4 per id (the corpus BLEU is not their mean)."""
        from pycocoevalcap.bleu.bleu import Bleu

        _, per_item = Bleu(4).compute_score(dict(gts), dict(res), verbose=0)
        return {k: float(v) for k, v in zip(gts, per_item[3], strict=True)}


class RougeL(CocoMetric):
    """ROUGE-L (LCS F-measure, beta 1.2, max over references; COCO)."""

    key = "rouge_l"

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        from pycocoevalcap.rouge.rouge import Rouge

        value, _ = Rouge().compute_score(dict(gts), dict(res))
        return {"rouge_l": float(value)}

    def score_items_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        """ROUGE-L per id (the corpus value is their mean)."""
        from pycocoevalcap.rouge.rouge import Rouge

        _, per_item = Rouge().compute_score(dict(gts), dict(res))
        return {k: float(v) for k, v in zip(gts, per_item, strict=True)}


class Cider(CocoMetric):
    """CIDEr-D (COCO): tf-idf n-gram consensus, idf from the references of this corpus."""

    key = "cider"

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        from pycocoevalcap.cider.cider import Cider as _Cider

        value, _ = _Cider().compute_score(dict(gts), dict(res))
        return {"cider": float(value)}

    def score_items_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        """CIDEr-D per id, idf from all references (the corpus value is their mean)."""
        from pycocoevalcap.cider.cider import Cider as _Cider

        _, per_item = _Cider().compute_score(dict(gts), dict(res))
        return {k: float(v) for k, v in zip(gts, per_item, strict=True)}
