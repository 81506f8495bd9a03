"""Query kinds of the synthetic set v2: vocabulary, templates and what each kind tests.

Every (image, query) of a v2 set names its ``kind``. Eight kinds, each one query template,
chosen so that a kind isolates one thing a 360-degree model has to get right; five of them
need what CORA is about (the seam, tile boundaries, overlaps, relations across tiles, the
poles). Placement rules are in ``cora_kit.data.scene_v2``; the geometry words below refer
to the default ``e2p`` layout (8 tiles, FOV 90, yaw stride 45, pitch 0, plus the global
view) and the ``stride-views`` stitcher.

``query_template(query)`` maps a query back to its template by replacing the vocabulary
(colour, shape and direction words) with placeholders; the text-prior control and the data
card's chance levels take the majority answer per template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cora_kit.data.scene import COLOURS, SHAPES

#: The 8 compass directions, one every 45 degrees of longitude from the front (lon 0) to
#: the right (lon 90): the e2p tile centres. ``DIRECTIONS[k]`` is at ``45 * k`` degrees.
DIRECTIONS: tuple[str, ...] = (
    "front", "front right", "right", "back right", "back", "back left", "left", "front left",
)
SIDES: tuple[str, ...] = ("left", "right")
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three")


@dataclass(frozen=True)
class KindInfo:
    """One query kind: its ``template`` (placeholders in braces), the answer set and what
    it tests (for the data card)."""

    name: str
    template: str
    answers: str
    tests: str


KINDS: dict[str, KindInfo] = {
    k.name: k
    for k in (
        KindInfo(
            "where", "where is the {colour} object?", "one of the 8 directions",
            "direction of a named object; objects of this kind sit on the 8 compass directions "
            "(the e2p tile centres), so the answer is which tile holds it, read through the "
            "panorama position encoding",
        ),
        KindInfo(
            "shape", "what shape is the {colour} object?", "ball, cube, cone, pillar",
            "fine detail: the shape of a named object 18-24 deg across (a 64-px tile shows it at "
            "13-17 px, the global view at 3-4 px wide)",
        ),
        KindInfo(
            "presence", "is there a {colour} object?", "yes, no (half each)",
            "search: whether a colour occurs anywhere on the sphere (every view, the high "
            "object included)",
        ),
        KindInfo(
            "seam", "what colour is the object at the {direction}?", "a colour",
            "the +-180 deg seam: the object at the back straddles it (its halves lie at both ERP "
            "edges and at both ends of the global view; the e2p tile at yaw 180 sees it whole)",
        ),
        KindInfo(
            "tile-boundary", "what colour is the object at the {direction}?", "a colour",
            "tile boundaries: the object is centred on 45 deg x k (k not 0 or 4), where the "
            "stitched token panorama passes from one tile's columns to the next (half of the "
            "object comes from each tile) and the tiles at +-45 deg see it cut by their edge",
        ),
        KindInfo(
            "overlap-count", "how many {colour} objects are there?", "one, two (half each)",
            "counting across overlaps: the 1 or 2 objects of the colour each sit in the middle "
            "of a tile overlap (22.5 + 45 x k deg), where two tiles see them whole; each counts once",
        ),
        KindInfo(
            "relation", "what colour is the object {direction} of the {colour} object?", "a colour",
            "relations across tiles: the colour of the nearest object on the left (or right) of a "
            "named one, 84-164 deg away, so no tile shows both whole",
        ),
        KindInfo(
            "high", "what colour is the object high above?", "a colour",
            "the poles: one object at latitude 63-70 deg, above every e2p tile (their top edge is "
            "at 45 deg or lower), so only the global view shows it",
        ),
    )
}

_VOCAB: list[tuple[str, str]] = (
    [(c, "{colour}") for c in COLOURS]
    + [(s, "{shape}") for s in SHAPES]
    + [(d, "{direction}") for d in sorted(DIRECTIONS, key=len, reverse=True)]
)
_VOCAB_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w, _ in _VOCAB) + r")\b")
_SLOT = dict(_VOCAB)


def query_template(query: str) -> str:
    """``"what colour is the object at the front right?"`` ->
    ``"what colour is the object at the {direction}?"``: colour, shape and direction words
    (of this set's vocabulary) replaced by placeholders. A query without them (QuIC-360)
    is its own template."""
    return _VOCAB_RE.sub(lambda m: _SLOT[m.group(1)], query.lower().strip())


__all__ = ["COUNT_WORDS", "DIRECTIONS", "KINDS", "SIDES", "KindInfo", "query_template"]
