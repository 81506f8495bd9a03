"""Built-in metrics (registered through the `cora_kit` entry point `metrics`).

COCO-standard (pycocoevalcap, PTB-tokenised once for all of them by
``cora_kit.eval.scoring``): ``bleu4``, ``meteor``, ``rouge-l``, ``cider``, ``spice``;
plus the CORA paper's implementations ``sacrebleu``, ``meteor-nltk`` and ``rouge-score``, and
``exact-match`` (short answers; per query kind as ``exact-match/<kind>`` when the data names
kinds). Score keys use underscores (``rouge_l``,
``meteor_nltk``), which are also accepted as names.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


def _java() -> str:
    from cora_kit_builtins.metrics.java import find_java

    return "java" if find_java() else "java missing"


def _coco_backend() -> str:
    """BLEU / ROUGE-L / CIDEr: pycocoevalcap's Python scorers on PTB tokens (a java jar)."""
    return f"pycocoevalcap, PTB tokenizer on {_java()}"


def _meteor_backend() -> str:
    return f"METEOR 1.5 jar on {_java()}"


def _spice_backend() -> str:
    from cora_kit_builtins.metrics.spice import Spice

    corenlp = "CoreNLP 3.6.0" if Spice().corenlp_jars() else "CoreNLP missing"
    return f"SPICE 1.0 jar on {_java()}, {corenlp}"


def _wordnet_backend() -> str:
    from cora_kit_builtins.metrics.meteor_nltk import wordnet_unavailable_reason

    return "nltk" if wordnet_unavailable_reason() is None else "nltk, WordNet missing"


def _rouge_score_backend() -> str:
    from cora_kit_builtins.metrics.rouge_score_metric import rouge_score_unavailable_reason

    return "rouge-score" if rouge_score_unavailable_reason() is None else "rouge-score (missing)"


@hookimpl
def register_metrics(register: RegisterCallback) -> None:
    """Register the built-in metrics."""
    from cora_kit_builtins.metrics import (
        coco,
        exact_match,
        meteor,
        meteor_nltk,
        rouge_score_metric,
        sacrebleu_metric,
        spice,
    )

    register(
        "bleu4",
        coco.Bleu4,
        aliases=("bleu",),
        params=coco.CocoParams,
        backend=_coco_backend,
        description="COCO BLEU-4 (pycocoevalcap, PTB tokens); BLEU-1..3 as details",
    )
    register(
        "meteor",
        meteor.Meteor,
        params=coco.CocoParams,
        backend=_meteor_backend,
        description="COCO METEOR 1.5 (java jar, guarded by a timeout)",
    )
    register(
        "rouge-l",
        coco.RougeL,
        aliases=("rouge_l", "rougel"),
        params=coco.CocoParams,
        backend=_coco_backend,
        description="COCO ROUGE-L (pycocoevalcap, PTB tokens)",
    )
    register(
        "cider",
        coco.Cider,
        aliases=("cider-d",),
        params=coco.CocoParams,
        backend=_coco_backend,
        description="COCO CIDEr-D (pycocoevalcap, PTB tokens)",
    )
    register(
        "spice",
        spice.Spice,
        params=spice.SpiceParams,
        backend=_spice_backend,
        description="COCO SPICE 1.0 (needs Stanford CoreNLP 3.6.0 jars; never downloads)",
    )
    register(
        "sacrebleu",
        sacrebleu_metric.SacreBleu,
        params=sacrebleu_metric.SacreBleuParams,
        backend="sacrebleu",
        description="corpus BLEU by sacrebleu (0-1 scale), variable references",
    )
    register(
        "meteor-nltk",
        meteor_nltk.MeteorNltk,
        aliases=("meteor_nltk",),
        backend=_wordnet_backend,
        description="METEOR by NLTK (needs the WordNet corpus; see 'eval setup-wordnet')",
    )
    register(
        "rouge-score",
        rouge_score_metric.RougeScore,
        aliases=("rouge_score",),
        params=rouge_score_metric.RougeScoreParams,
        backend=_rouge_score_backend,
        description="ROUGE-L F by Google's rouge-score (Porter stemmer), the paper's ROUGE-L",
    )
    register(
        "exact-match",
        exact_match.ExactMatch,
        aliases=("exact_match", "em"),
        backend="python",
        description="answer equals a reference after lower-case, punctuation removal, whitespace"
        " collapse; exact-match/<kind> per query kind when the data names kinds",
    )
