"""Metric plugins: parity with pycocoevalcap called directly, grouping, java guard, NaN+reason."""

from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path

import pytest

import cora_kit
from cora_kit.errors import CoraKitError, DataError
from cora_kit.eval import scoring, wordnet
from cora_kit.interfaces import Metric
from cora_kit_builtins.metrics import java as javamod
from cora_kit_builtins.metrics import ptb

HAS_JAVA = javamod.find_java() is not None
WRITABLE, WHY_NOT_WRITABLE = ptb.install_dir_writable()
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="java not installed")

VOCAB = (
    "a man woman dog cat sits on the red blue chair table street , near . runs walks"
    " with two small big"
).split()


def _dataset(n: int = 30, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi)))

    preds = {f"img{k}": sentence(3, 10).capitalize() + "." for k in range(n)}
    refs = {k: [sentence(3, 12) for _ in range(rng.randint(1, 4))] for k in preds}
    preds["img0"] = "A dog\nsits on a\tchair."  # newline/tab: normalised, never breaks java
    return preds, refs


@pytest.fixture(scope="module")
def coco_peer() -> tuple[dict, dict, dict[str, float], scoring.ScoreReport]:
    """The dataset, pycocoevalcap's own numbers (COCOEvalCap's protocol) and cora-kit's.

    pycocoevalcap's METEOR JVM starts first and loads while cora-kit's suite runs, so
    the two METEOR start-ups (most of the time) overlap.
    """
    if not HAS_JAVA:
        pytest.skip("java not installed")
    if not WRITABLE:
        pytest.skip(WHY_NOT_WRITABLE)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    preds, refs = _dataset()
    meteor = Meteor()
    try:
        ours = scoring.score(preds, refs, ["bleu4", "meteor", "rouge_l", "cider"], strict=True)
    except BaseException:
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
        raise
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    try:
        meteor_value = meteor.compute_score(gts, res)[0]
    finally:
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    values = {
        "bleu1": bleu[0],
        "bleu2": bleu[1],
        "bleu3": bleu[2],
        "bleu4": bleu[3],
        "meteor": meteor_value,
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }
    return preds, refs, values, ours


# --- registry ---------------------------------------------------------------------

EXPECTED = {
    "bleu4", "meteor", "rouge-l", "cider", "spice", "sacrebleu", "meteor-nltk", "rouge-score", "exact-match"
}


def test_every_builtin_metric_is_registered() -> None:
    names = {i.name for i in cora_kit.list_plugins("metric")}
    assert EXPECTED <= names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metric_builds_and_reports_availability(name: str) -> None:
    metric = cora_kit.create("metric", name)
    assert isinstance(metric, Metric)
    ok, reason = metric.available()
    assert isinstance(ok, bool)
    assert ok or reason.startswith("unavailable: ")


def test_underscore_aliases() -> None:
    assert cora_kit.create("metric", "rouge_l").key == "rouge_l"
    assert cora_kit.create("metric", "meteor_nltk").key == "meteor_nltk"


# --- parity with pycocoevalcap ------------------------------------------------------


def test_suite_equals_pycocoevalcap(coco_peer) -> None:
    preds, refs, expected, report = coco_peer
    assert list(report.values)[:4] == ["bleu4", "bleu1", "bleu2", "bleu3"]
    for key, value in expected.items():
        assert report.values[key] == pytest.approx(value, abs=1e-9), key
    assert report.unavailable == {}
    assert report.count == len(preds)


@pytest.mark.parametrize("name,key", [("bleu4", "bleu4"), ("rouge-l", "rouge_l"), ("cider", "cider")])
def test_single_metric_score_equals_pycocoevalcap(coco_peer, name: str, key: str) -> None:
    preds, refs, expected, _ = coco_peer
    values = cora_kit.create("metric", name).score(preds, refs)
    assert next(iter(values)) == key
    assert values[key] == pytest.approx(expected[key], abs=1e-9)


@needs_java
def test_ptb_tokenizer_one_call_matches_and_normalises() -> None:
    res, gts = ptb.ptb_tokenize_groups(
        [{"a": ["A man,\nriding a horse!"], "b": [""]}, {"a": ["The   dog's toy."], "b": ["x"]}]
    )
    assert res == {"a": ["a man riding a horse"], "b": [""]}
    assert gts == {"a": ["the dog 's toy"], "b": ["x"]}


# --- grouping and inputs ------------------------------------------------------------


def test_grouped_references_beat_one_reference_row() -> None:
    """The paper's bug: scoring against one reference row instead of the whole group."""
    from cora_kit_builtins.metrics.coco import Cider

    res = {"a": ["a dog runs on the grass"], "b": ["a cat sleeps on a red sofa"]}
    gts = {
        "a": ["a cat sits", "a dog runs on the grass", "grass"],
        "b": ["a red sofa", "a cat sleeps on a red sofa", "sleeping"],
    }
    grouped = Cider().score_tokenized(res, gts)["cider"]
    first_row_only = Cider().score_tokenized(res, {k: v[:1] for k, v in gts.items()})["cider"]
    assert grouped > first_row_only


def test_read_references_groups_rows_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "refs.jsonl"
    path.write_text(
        '{"id": 1, "reference": "a"}\n\n{"id": "2", "references": ["x", "y"]}\n'
        '{"id": "1", "reference": "b"}\n'
    )
    assert scoring.read_references(path) == {"1": ["a", "b"], "2": ["x", "y"]}


@pytest.mark.parametrize(
    "text,needle",
    [
        ('{"id": 1, "references": ["a"]}\n{"id": 1, "references": ["b"]}\n', "refs.jsonl:2"),
        ('{"id": 1, "references": ["a"]}\n{"id": 1, "reference": "b"}\n', "one form per id"),
        ('{"id": 1, "references": []}\n', "non-empty list"),
        ('{"id": 1}\n', "missing field 'references'"),
        ('{"id": 1, "reference": "a"}\n{oops\n', "refs.jsonl:2: invalid JSON"),
        ('{"id": [1], "reference": "a"}\n', "field 'id'"),
    ],
)
def test_bad_reference_files_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "refs.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=needle.replace("[", r"\[")):
        scoring.read_references(path)


def test_bad_prediction_files(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "prediction": "a"}\n{"id": 1, "prediction": "b"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: duplicate id '1' \(first on line 1\)"):
        scoring.read_predictions(path)
    path.write_text('{"id": 1, "prediction": null}\n')
    with pytest.raises(DataError, match="p.jsonl:1: field 'prediction' must be a string"):
        scoring.read_predictions(path)


def test_id_mismatch_lists_ids() -> None:
    preds = {f"p{i}": "x" for i in range(8)} | {"both": "y"}
    refs = {"both": ["y"], "only-ref": ["z"]}
    with pytest.raises(DataError) as err:
        scoring.score(preds, refs, ["sacrebleu"])
    msg = str(err.value)
    assert "8 predicted id(s) have no references: 'p0', 'p1'" in msg and "(8 in all)" in msg
    assert "1 referenced id(s) have no prediction: 'only-ref'" in msg


def test_empty_prediction_is_scored_not_skipped() -> None:
    preds = {"a": "a dog runs on the grass", "b": ""}
    refs = {"a": ["a dog runs on the grass"], "b": ["a cat sleeps"]}
    with_empty = scoring.score(preds, refs, ["sacrebleu"]).values["sacrebleu"]
    without = scoring.score({"a": preds["a"]}, {"a": refs["a"]}, ["sacrebleu"]).values["sacrebleu"]
    assert with_empty < without == pytest.approx(1.0)


def test_sacrebleu_equals_sacrebleu_direct() -> None:
    import sacrebleu

    preds, refs = _dataset(20, seed=3)
    refs = {k: (v * 3)[:3] for k, v in refs.items()}  # 3 refs each: sacrebleu's plain API
    ids = list(preds)
    streams = [[refs[i][j] for i in ids] for j in range(3)]
    direct = sacrebleu.corpus_bleu([preds[i] for i in ids], streams).score / 100
    assert cora_kit.create("metric", "sacrebleu").score(preds, refs)["sacrebleu"] == pytest.approx(
        direct, abs=1e-12
    )


# --- the java guard -----------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-java"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def _state(pid: int) -> str | None:
    """Process state letter from /proc (None once the process is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return None


def _dead(pid: int) -> bool:
    """Killed: reaped, or a zombie awaiting a parent that is not ours (init)."""
    return _state(pid) in (None, "Z", "X")


SLOW_JAVA = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
open(os.environ["PIDS"], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(60)
"""


def test_meteor_timeout_kills_process_group(tmp_path: Path, monkeypatch) -> None:
    from cora_kit_builtins.metrics.meteor import Meteor

    pids = tmp_path / "pids"
    monkeypatch.setenv("PIDS", str(pids))
    metric = Meteor(timeout_s=1.5, java=_script(tmp_path, SLOW_JAVA))
    start = time.monotonic()
    with pytest.raises(javamod.JavaTimeoutError, match="1.5 s timeout"):
        metric.score_tokenized({"a": ["a dog"]}, {"a": ["a dog runs"]})
    assert time.monotonic() - start < 10
    java_pid, grandchild = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while not (_state(java_pid) is None and _dead(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(java_pid) is None, "java process left running or as a zombie"
    assert _dead(grandchild), "process group not killed"


ERROR_JAVA = """
import sys
for line in sys.stdin:
    print("Error: specify SCORE or EVAL or SING", flush=True)
"""


def test_meteor_error_answer_raises_instead_of_deadlocking(tmp_path: Path) -> None:
    from cora_kit_builtins.metrics.meteor import Meteor

    metric = Meteor(timeout_s=30, java=_script(tmp_path, ERROR_JAVA))
    with pytest.raises(javamod.JavaError, match="Error: specify SCORE"):
        metric.score_tokenized({"a": ["a dog"]}, {"a": ["a dog runs"]})
    assert metric._process is None


def test_timeout_in_suite_is_nan_with_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))
    fake = _script(tmp_path, SLOW_JAVA)
    report = scoring.score(
        {"a": "a dog"},
        {"a": ["a dog runs"]},
        ["cider", "sacrebleu"],
        params={"cider": {"java": fake, "timeout_s": 1.0}},
    )
    assert math.isnan(report.values["cider"])
    assert "timeout" in report.unavailable["cider"]
    assert report.to_json()["cider"] is None
    assert report.values["sacrebleu"] >= 0.0


# --- unavailable metrics ------------------------------------------------------------


def test_missing_java_is_unavailable_with_reason() -> None:
    report = scoring.score(
        {"a": "x"}, {"a": ["x"]}, ["meteor", "bleu4"],
        params={"meteor": {"java": "/nonexistent/java"}, "bleu4": {"java": "/nonexistent/java"}},
    )  # fmt: skip
    assert math.isnan(report.values["meteor"]) and math.isnan(report.values["bleu4"])
    assert "java executable '/nonexistent/java' not found" in report.unavailable["meteor"]


def test_spice_without_corenlp_is_nan_and_never_downloads(monkeypatch, tmp_path: Path) -> None:
    import urllib.request

    def no_download(*args, **kwargs):
        raise AssertionError("SPICE tried to download CoreNLP")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    monkeypatch.delenv("CORA_KIT_SPICE_CORENLP_DIR", raising=False)
    metric = cora_kit.create("metric", "spice", corenlp_dir=str(tmp_path))
    if metric.corenlp_jars() is not None:
        pytest.skip("CoreNLP jars are installed in pycocoevalcap's spice/lib")
    ok, reason = metric.available()
    assert not ok and "CORA_KIT_SPICE_CORENLP_DIR" in reason and str(tmp_path) in reason
    report = scoring.score({"a": "x"}, {"a": ["x"]}, ["spice"], params={"spice": {"corenlp_dir": str(tmp_path)}})
    assert math.isnan(report.values["spice"]) and report.unavailable["spice"].startswith("unavailable: ")
    assert report.to_json() == {"spice": None, "unavailable": {"spice": reason}}


def test_spice_finds_corenlp_jars_from_env(monkeypatch, tmp_path: Path) -> None:
    from cora_kit_builtins.metrics.spice import CORENLP_JARS

    for name in CORENLP_JARS:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("CORA_KIT_SPICE_CORENLP_DIR", str(tmp_path))
    metric = cora_kit.create("metric", "spice")
    assert metric.corenlp_jars() == [tmp_path / n for n in CORENLP_JARS]
    assert str(tmp_path / CORENLP_JARS[1]) in metric.classpath()


def test_meteor_nltk_without_wordnet_is_unavailable(monkeypatch, tmp_path: Path) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    ok, reason = cora_kit.create("metric", "meteor-nltk").available()
    assert not ok and "setup-wordnet" in reason and str(tmp_path) in reason


# --- WordNet setup ------------------------------------------------------------------


def test_lexnames_is_wordnets_45_line_file() -> None:
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2" and lines[44] == "44\tadj.ppl\t3"


def test_setup_wordnet_missing_source_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(CoraKitError, match="apt-get install wordnet-base wordnet-sense-index"):
        wordnet.setup_wordnet(tmp_path / "none", tmp_path / "nltk_data")


@pytest.mark.slow
@pytest.mark.skipif(
    not (wordnet.DEFAULT_SOURCE / "index.sense").is_file(),
    reason="Debian wordnet-base + wordnet-sense-index not installed",
)
def test_setup_wordnet_then_meteor_nltk_equals_nltk(tmp_path: Path, monkeypatch) -> None:
    import nltk
    from nltk.translate.meteor_score import meteor_score

    root = tmp_path / "nltk_data"
    target = wordnet.setup_wordnet(dest=root)
    assert (target / "lexnames").is_file()
    monkeypatch.setattr(nltk.data, "path", [str(root)])
    preds, refs = _dataset(10, seed=5)
    got = cora_kit.create("metric", "meteor-nltk").score(preds, refs)["meteor_nltk"]
    want = sum(
        meteor_score([r.lower().split() for r in refs[k]], p.lower().split())
        for k, p in preds.items()
    ) / len(preds)
    assert got == pytest.approx(want, abs=1e-12) and 0 < got < 1
