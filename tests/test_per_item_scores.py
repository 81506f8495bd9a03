"""Per-item scores (for paired bootstrap CIs) agree with the corpus scores where they should."""

from __future__ import annotations

import numpy as np
import pytest

from cora_kit.eval.scoring import per_item_scores, score

PREDS = {"a": "a red ball is in front", "b": "two cubes", "c": "nothing", "d": ""}
REFS = {
    "a": ["a red ball in front", "red ball ahead"],
    "b": ["two blue cubes", "there are two cubes"],
    "c": ["nothing", "no object"],
    "d": ["a green cone", "green cone"],
}


def test_per_item_means_equal_corpus_cider_and_rouge():
    items, missing = per_item_scores(PREDS, REFS, ["cider", "rouge_l", "bleu4", "meteor"])
    corpus = score(PREDS, REFS, ["cider", "rouge_l"]).values
    assert set(items["cider"]) == set(PREDS)
    assert np.mean(list(items["cider"].values())) == pytest.approx(corpus["cider"], abs=1e-12)
    assert np.mean(list(items["rouge_l"].values())) == pytest.approx(corpus["rouge_l"], abs=1e-12)
    assert items["cider"]["d"] == 0.0  # the empty prediction is scored, not skipped
    assert "meteor" in missing and "bleu4" in items
