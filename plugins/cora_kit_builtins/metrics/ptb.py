"""COCO-caption PTB tokenisation (Stanford CoreNLP 3.4.1 jar shipped with pycocoevalcap).

Same output as ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (``-preserveLines
-lowerCase``, then pycocoevalcap's punctuation list removed), with three differences
that do not change the tokens of clean text:

- whitespace (newlines, tabs, runs of spaces, Unicode separators) is normalised to one
  space first, so one caption is always one line;
- predictions and references go through ONE java call, and the temp file lives in the
  system temp folder, not in pycocoevalcap's install folder;
- java runs under a timeout and is killed cleanly (see ``java.py``); a line-count
  mismatch is an error instead of a silent misalignment.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from cora_kit_builtins.metrics.java import DEFAULT_TIMEOUT_S, JavaError, run_java

PTB_MAIN_CLASS = "edu.stanford.nlp.process.PTBTokenizer"


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (incl. newlines) into one space; strip ends."""
    return " ".join(text.split())


def pycocoevalcap_dir() -> Path:
    """The install folder of pycocoevalcap (raises ImportError when not installed)."""
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0])


def ptb_jar() -> Path:
    """Path of the CoreNLP 3.4.1 jar that pycocoevalcap's PTBTokenizer uses."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    return Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR


def punctuations() -> frozenset[str]:
    """pycocoevalcap's list of punctuation tokens removed after tokenisation."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    return frozenset(ptbtokenizer.PUNCTUATIONS)


def install_dir_writable() -> tuple[bool, str | None]:
    """Whether pycocoevalcap's install folder is writable.

    pycocoevalcap's own PTBTokenizer and Spice write temp files there; cora-kit's
    runners do not, but calling pycocoevalcap directly (the benchmark's peer, the
    parity tests) needs it.
    """
    import os

    folder = pycocoevalcap_dir()
    if os.access(folder, os.W_OK) and os.access(folder / "tokenizer", os.W_OK):
        return True, None
    return False, (
        f"pycocoevalcap's install folder {folder} is not writable: its PTBTokenizer and"
        " Spice classes write temp files there and fail (cora-kit's own runners use the"
        " system temp folder and are not affected)"
    )


def ptb_tokenize_groups(
    groups: Sequence[Mapping[str, Sequence[str]]],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    java: str | None = None,
) -> list[dict[str, list[str]]]:
    """Tokenise several ``{id: [caption, ...]}`` mappings with one java call.

    Returns one ``{id: [tokenised caption, ...]}`` per input mapping, same id order.
    """
    owners: list[tuple[int, str]] = []
    sentences: list[str] = []
    for g, mapping in enumerate(groups):
        for key, captions in mapping.items():
            for caption in captions:
                owners.append((g, key))
                sentences.append(normalize_whitespace(caption))
    out: list[dict[str, list[str]]] = [{key: [] for key in m} for m in groups]
    if not sentences:
        return out
    with tempfile.TemporaryDirectory(prefix="cora-kit-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes("\n".join(sentences).encode("utf-8"))
        text = run_java(
            ["-cp", str(ptb_jar()), PTB_MAIN_CLASS, "-preserveLines", "-lowerCase", str(path)],
            timeout_s=timeout_s,
            java=java,
            what="PTB tokenizer",
        )
    lines = text.split("\n")
    extra = [line for line in lines[len(sentences) :] if line.strip()]
    if len(lines) < len(sentences) or extra:
        raise JavaError(
            f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions;"
            " refusing to misalign predictions and references"
        )
    drop = punctuations()
    for (g, key), line in zip(owners, lines):
        tokens = [w for w in line.rstrip().split(" ") if w not in drop]
        out[g][key].append(" ".join(tokens))
    return out
