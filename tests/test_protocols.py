"""``--protocol paper``: each reference row alone, with the paper's implementations,
checked against sacrebleu / NLTK / rouge-score / pycocoevalcap called directly."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

import cora_kit
from cora_kit.cli import main
from cora_kit.eval import protocols, wordnet
from cora_kit_builtins.metrics import java as javamod

needs_java = pytest.mark.skipif(javamod.find_java() is None, reason="java not installed")
VOCAB = "a man woman dog cat sits on the red blue chair table street , near . runs walks running with two".split()


def _dataset(n: int = 25, seed: int = 3) -> tuple[dict[str, str], dict[str, list[str]]]:
    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi)))

    preds = {f"pano{k}#0": sentence(2, 9).capitalize() + "." for k in range(n)}
    refs = {k: [sentence(2, 11) for _ in range(rng.randint(1, 4))] for k in preds}
    return preds, refs


def _rows(preds: dict[str, str], refs: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The seed's input: one (prediction, reference) pair per reference row."""
    p, r = [], []
    for key, group in refs.items():
        for ref in group:
            p.append(preds[key])
            r.append(ref)
    return p, r


def _write(tmp_path: Path, preds, refs) -> tuple[Path, Path]:
    pp, rp = tmp_path / "predictions.jsonl", tmp_path / "references.jsonl"
    pp.write_text("".join(json.dumps({"id": k, "prediction": v}) + "\n" for k, v in preds.items()))
    rp.write_text("".join(json.dumps({"id": k, "references": v}) + "\n" for k, v in refs.items()))
    return pp, rp


def _no_wordnet(monkeypatch, tmp_path: Path) -> None:
    import nltk

    empty = tmp_path / "no_nltk_data"
    empty.mkdir()
    monkeypatch.setattr(nltk.data, "path", [str(empty)])


def test_expand_rows_one_row_per_reference() -> None:
    preds, refs = {"a": "x", "b": "y"}, {"a": ["r1", "r2"], "b": ["r3"]}
    rp, rr = protocols.expand_rows(preds, refs)
    assert rp == {"a#0": "x", "a#1": "x", "b#0": "y"}
    assert rr == {"a#0": ["r1"], "a#1": ["r2"], "b#0": ["r3"]}


def test_rouge_score_plugin_equals_rouge_score_direct() -> None:
    from rouge_score import rouge_scorer

    preds, refs = _dataset()
    got = cora_kit.create("metric", "rouge-score").score(preds, refs)["rouge_score"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    want = sum(max(scorer.score(r, p)["rougeL"].fmeasure for r in refs[k]) for k, p in preds.items()) / len(preds)
    assert got == pytest.approx(want, abs=1e-12) and 0 < got < 1


@needs_java
def test_eval_protocol_paper_equals_the_libraries(tmp_path: Path, monkeypatch) -> None:
    import sacrebleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from rouge_score import rouge_scorer

    _no_wordnet(monkeypatch, tmp_path)
    monkeypatch.delenv("CORA_KIT_SPICE_CORENLP_DIR", raising=False)
    preds, refs = _dataset()
    pp, rp = _write(tmp_path, preds, refs)
    out = tmp_path / "scores.json"
    assert main(["eval", "-p", str(pp), "-r", str(rp), "--protocol", "paper", "--json", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    row_p, row_r = _rows(preds, refs)
    assert got["protocol"] == "paper" and got["num_items"] == len(preds) and got["num_rows"] == len(row_p)

    bleu = sacrebleu.corpus_bleu(row_p, [row_r], smooth_method="exp", tokenize="13a", lowercase=False,
                                 use_effective_order=True).score / 100
    assert got["bleu4"] == pytest.approx(bleu, abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(row_p, row_r)) / len(row_p)
    assert got["rouge_l"] == pytest.approx(rouge, abs=1e-12)
    tok = PTBTokenizer()
    gts = tok.tokenize({str(i): [{"caption": r}] for i, r in enumerate(row_r)})
    res = tok.tokenize({str(i): [{"caption": p}] for i, p in enumerate(row_p)})
    assert got["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)

    # what cannot run is NaN with its reason, never another implementation
    assert got["meteor"] is None and "WordNet" in got["unavailable"]["meteor"]
    assert got["spice"] is None and "CoreNLP" in got["unavailable"]["spice"]
    assert got["implementations"]["bleu4"].startswith("sacrebleu")
    assert got["implementations"]["rouge_l"].startswith("rouge-score")

    # the grouped protocol scores the same files differently, and says which it is
    assert main(["eval", "-p", str(pp), "-r", str(rp), "-m", "cider", "--json", "--out", str(out)]) == 0
    grouped = json.loads(out.read_text())
    assert grouped["protocol"] == "grouped" and not math.isclose(grouped["cider"], got["cider"])


def test_paper_protocol_metric_subset_and_unknown(tmp_path: Path, capsys) -> None:
    preds, refs = _dataset(5)
    pp, rp = _write(tmp_path, preds, refs)
    assert main(["eval", "-p", str(pp), "-r", str(rp), "--protocol", "paper", "-m", "bleu4,rouge-l", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [k for k in got if k in protocols.PAPER_METRICS] == ["bleu4", "rouge_l"]
    assert main(["eval", "-p", str(pp), "-r", str(rp), "--protocol", "paper", "-m", "bleu1"]) == 2
    assert "not a column of the paper protocol" in capsys.readouterr().err
    assert main(["eval", "-p", str(pp), "-r", str(rp), "--protocol", "seed"]) == 2
    assert "unknown scoring protocol 'seed'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not (wordnet.DEFAULT_SOURCE / "index.sense").is_file(),
    reason="Debian wordnet-base + wordnet-sense-index not installed",
)
def test_paper_meteor_equals_nltk_per_row(tmp_path: Path, monkeypatch) -> None:
    import nltk
    from nltk.translate.meteor_score import meteor_score

    root = tmp_path / "nltk_data"
    wordnet.setup_wordnet(dest=root)
    monkeypatch.setattr(nltk.data, "path", [str(root)])
    preds, refs = _dataset(12)
    got = protocols.score_protocol(preds, refs, "paper", ["meteor"])
    row_p, row_r = _rows(preds, refs)
    want = sum(meteor_score([r.split()], p.split()) for p, r in zip(row_p, row_r)) / len(row_p)
    assert got["meteor"] == pytest.approx(want, abs=1e-12) and 0 < want < 1
