"""Answer normalisation shared by the ``exact-match`` metric, the text-prior control and
the synthetic set's data card: one definition of "the same answer"."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """``"  The Red, cube! "`` -> ``"the red cube"``: lower-case, ASCII punctuation
    removed (not replaced: ``"it's"`` -> ``"its"``), whitespace collapsed."""
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


def matches(prediction: str, references: Sequence[str]) -> bool:
    """Whether ``prediction`` equals one of ``references`` after normalisation."""
    norm = normalize_answer(prediction)
    return any(norm == normalize_answer(r) for r in references)
