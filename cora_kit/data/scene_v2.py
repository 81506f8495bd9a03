"""Scenes and queries of the synthetic set v2: objects on a ring of slots, built for kinds.

Horizon objects sit on 16 slots every 22.5 deg of longitude (slot ``s`` at ``22.5 s``,
jittered by up to +-3 deg; latitude within +-12 deg; angular radius 9-12 deg), at least two
slots (45 deg) apart. Even slots are the 8 compass directions (the e2p tile centres, and
for ``s != 0`` the boundaries between tiles in the stitched token panorama); odd slots are
the middles of tile overlaps. An optional *high* object sits at latitude 63-70 deg.

``sample_scene_v2(rng, kinds, ...)`` first draws the layout the requested query kinds need
(the object at the back, one on a tile boundary, 1-2 same-coloured objects in overlaps, a
pair 4-7 slots apart with nothing between, a high object), then fills up with random
objects, then asks one query per kind (``cora_kit.data.kinds``). Colours are distinct
except for the overlap-count pair, so "the red object" always names one object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cora_kit.data.captions import QueryAnswer
from cora_kit.data.kinds import DIRECTIONS, KINDS
from cora_kit.data.scene import COLOURS, SHAPES, Scene, SceneObject, wrap_lon

N_SLOTS = 16
SLOT_DEG = 360.0 / N_SLOTS
MIN_SLOT_GAP = 2  # 45 deg between horizon objects
JITTER_DEG = 3.0
HORIZON_LAT_DEG = 12.0
RADIUS_DEG = (9.0, 12.0)
HIGH_LAT_DEG = (63.0, 70.0)
SEAM_SLOT = 8
BOUNDARY_SLOTS = (2, 4, 6, 10, 12, 14)  # even, not the front (0) nor the seam (8)
RELATION_SLOTS = (4, 5, 6, 7)  # 90..157.5 deg (+-6 jitter) between the pair
MAX_ATTEMPTS = 200


@dataclass
class _Layout:
    """Slots (-1: the high object), colour groups and the roles the kinds need."""

    slots: list[int]
    colour_of: list[int]  # index into COLOURS per object
    roles: dict[str, object]


def slot_of(obj: SceneObject) -> int | None:
    """The slot of a horizon object (None for the high object)."""
    if abs(obj.lat) > HORIZON_LAT_DEG + 1e-6:
        return None
    return int(round(wrap_lon(obj.lon) / SLOT_DEG)) % N_SLOTS


def slot_distance(a: int, b: int) -> int:
    d = abs(a - b) % N_SLOTS
    return min(d, N_SLOTS - d)


def _free(slots: list[int], s: int, blocked: set[int]) -> bool:
    return s not in blocked and all(t < 0 or slot_distance(s, t) >= MIN_SLOT_GAP for t in slots)


def _pick(rng: np.random.Generator, options: list[int]) -> int | None:
    return options[int(rng.integers(len(options)))] if options else None


def _layout(rng: np.random.Generator, kinds: list[str], n_horizon: int) -> _Layout | None:
    """One attempt at a layout serving ``kinds``; None when the draw does not fit."""
    slots: list[int] = []
    blocked: set[int] = set()
    roles: dict[str, object] = {}
    groups: list[list[int]] = []  # objects sharing one colour

    def add(s: int) -> int:
        slots.append(s)
        groups.append([len(slots) - 1])
        return len(slots) - 1

    if "seam" in kinds:
        roles["seam"] = add(SEAM_SLOT)
    if "tile-boundary" in kinds:
        s = _pick(rng, [t for t in BOUNDARY_SLOTS if _free(slots, t, blocked)])
        if s is None:
            return None
        roles["tile-boundary"] = add(s)
    if "relation" in kinds:
        side = "left" if rng.random() < 0.5 else "right"
        gap = RELATION_SLOTS[int(rng.integers(len(RELATION_SLOTS)))]
        step = -1 if side == "left" else 1  # left: decreasing longitude
        pairs = [
            (r, (r + step * gap) % N_SLOTS) for r in range(N_SLOTS)
            if _free(slots, r, blocked) and _free(slots, (r + step * gap) % N_SLOTS, blocked)
            and slot_distance(r, (r + step * gap) % N_SLOTS) >= MIN_SLOT_GAP
            and not any(t >= 0 and (step * (t - r)) % N_SLOTS in range(1, gap) for t in slots)
        ]
        if not pairs:
            return None
        r, t = pairs[int(rng.integers(len(pairs)))]
        ref, target = add(r), add(t)
        blocked |= {(r + step * k) % N_SLOTS for k in range(1, gap)}
        roles["relation"] = (ref, side, target)
    if "overlap-count" in kinds:
        count = 1 + int(rng.random() < 0.5)
        members = []
        for _ in range(count):
            s = _pick(rng, [t for t in range(1, N_SLOTS, 2) if _free(slots, t, blocked)])
            if s is None:
                return None
            slots.append(s)
            members.append(len(slots) - 1)
        groups.append(members)
        roles["overlap-count"] = members[0]
    if "high" in kinds:
        roles["high"] = add(-1)
    if "where" in kinds:  # a direction drawn uniformly, then an object on it
        s = 2 * int(rng.integers(len(DIRECTIONS)))
        if s in slots:
            if not any(g == [slots.index(s)] for g in groups):
                return None
            roles["where"] = slots.index(s)
        elif _free(slots, s, blocked):
            roles["where"] = add(s)
        else:
            return None
    if "shape" in kinds and not any(len(g) == 1 and slots[g[0]] >= 0 for g in groups):
        s = _pick(rng, [t for t in range(N_SLOTS) if _free(slots, t, blocked)])
        if s is None:
            return None
        add(s)
    while sum(s >= 0 for s in slots) < n_horizon:
        s = _pick(rng, [t for t in range(N_SLOTS) if _free(slots, t, blocked)])
        if s is None:
            break
        add(s)
    if len(groups) > len(COLOURS) - ("presence" in kinds):  # presence may need an absent colour
        return None
    palette = rng.permutation(len(COLOURS))[: len(groups)]
    colour_of = [0] * len(slots)
    for g, members in enumerate(groups):
        for i in members:
            colour_of[i] = int(palette[g])
    return _Layout(slots, colour_of, roles)


def _objects(rng: np.random.Generator, layout: _Layout) -> list[SceneObject]:
    out = []
    for s, c in zip(layout.slots, layout.colour_of, strict=True):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        radius = round(float(rng.uniform(*RADIUS_DEG)), 3)
        if s < 0:
            lon = float(rng.uniform(-180.0, 180.0))
            lat = float(rng.uniform(*HIGH_LAT_DEG))
        else:
            lon = s * SLOT_DEG + float(rng.uniform(-JITTER_DEG, JITTER_DEG))
            lat = float(rng.uniform(-HORIZON_LAT_DEG, HORIZON_LAT_DEG))
        out.append(SceneObject(shape, list(COLOURS)[c], round(wrap_lon(lon), 3), round(lat, 3), radius))
    return out


def _refs(rng: np.random.Generator, canonical: str, others: list[str]) -> tuple[str, ...]:
    """The canonical answer first, then 2-4 distinct paraphrases (3-5 references)."""
    pool = list(dict.fromkeys(o for o in others if o != canonical))
    k = int(rng.integers(2, 5))
    order = sorted(rng.permutation(len(pool))[: min(k, len(pool))])
    return (canonical, *[pool[i] for i in order])


def _colour_answer(rng: np.random.Generator, kind: str, query: str, o: SceneObject) -> QueryAnswer:
    c = o.colour
    others = [f"it is {c}", f"a {c} {o.shape}", f"the {c} {o.shape}", f"{c} colour", f"it is a {c} {o.shape}"]
    return QueryAnswer(kind, query, _refs(rng, c, others))


def _unique(objs: list[SceneObject]) -> list[SceneObject]:
    return [o for o in objs if sum(p.colour == o.colour for p in objs) == 1]


def _ask(rng: np.random.Generator, kind: str, objs: list[SceneObject], roles: dict[str, object]) -> QueryAnswer:
    if kind in ("seam", "tile-boundary"):
        o = objs[roles[kind]]  # type: ignore[index]
        d = DIRECTIONS[slot_of(o) // 2]  # type: ignore[operator]
        return _colour_answer(rng, kind, f"what colour is the object at the {d}?", o)
    if kind == "high":
        return _colour_answer(rng, kind, "what colour is the object high above?", objs[roles["high"]])  # type: ignore[index]
    if kind == "relation":
        ref, side, target = roles["relation"]  # type: ignore[misc]
        q = f"what colour is the object {side} of the {objs[ref].colour} object?"
        return _colour_answer(rng, kind, q, objs[target])
    if kind == "overlap-count":
        c = objs[roles["overlap-count"]].colour  # type: ignore[index]
        n = sum(o.colour == c for o in objs)
        w = ("one", "two")[n - 1]
        if n == 1:
            others = ["there is one", f"one {c} object", "just one", "i count one", "only one"]
        else:
            others = ["there are two", f"two {c} objects", "i count two", "two of them", "a pair"]
        return QueryAnswer(kind, f"how many {c} objects are there?", _refs(rng, w, others))
    if kind == "where":
        o = objs[roles["where"]]  # type: ignore[index]
        d = DIRECTIONS[slot_of(o) // 2]  # type: ignore[operator]
        others = [f"at the {d}", f"it is at the {d}", f"the {o.colour} object is at the {d}", f"{d} of the viewer"]
        return QueryAnswer(kind, f"where is the {o.colour} object?", _refs(rng, d, others))
    if kind == "shape":
        cands = [o for o in _unique(objs) if slot_of(o) is not None]
        o = cands[int(rng.integers(len(cands)))]
        others = [f"a {o.shape}", f"it is a {o.shape}", f"the {o.colour} object is a {o.shape}", f"a {o.colour} {o.shape}"]
        return QueryAnswer(kind, f"what shape is the {o.colour} object?", _refs(rng, o.shape, others))
    if kind == "presence":
        present = sorted({o.colour for o in objs}, key=list(COLOURS).index)
        if rng.random() < 0.5:
            c = present[int(rng.integers(len(present)))]
            others = ["yes, there is", f"yes, a {c} object", "yes there is one", f"there is a {c} object"]
            return QueryAnswer(kind, f"is there a {c} object?", _refs(rng, "yes", others))
        absent = [c for c in COLOURS if c not in present]
        c = absent[int(rng.integers(len(absent)))]
        others = ["no, there is not", f"there is no {c} object", "no, none", f"no {c} object"]
        return QueryAnswer(kind, f"is there a {c} object?", _refs(rng, "no", others))
    raise ValueError(f"unknown query kind {kind!r}; kinds: {', '.join(KINDS)}")


def choose_kinds(rng: np.random.Generator, n: int, weights: dict[str, float] | None = None) -> list[str]:
    """``n`` distinct kinds, drawn with ``weights`` (default: all equal), in draw order."""
    names = list(KINDS)
    if not 1 <= n <= len(names):
        raise ValueError(f"queries per image must be in 1..{len(names)} (one per kind); got {n}")
    w = np.array([(weights or {}).get(k, 1.0) for k in names], dtype=float)
    order = rng.choice(len(names), size=n, replace=False, p=w / w.sum())
    return [names[int(i)] for i in order]


def sample_scene_v2(
    rng: np.random.Generator, n_queries: int, min_objects: int = 2, max_objects: int = 4
) -> tuple[Scene, list[QueryAnswer]]:
    """A scene built for ``n_queries`` distinct query kinds, and those queries.

    ``min_objects..max_objects`` horizon objects (more when the kinds need more), plus the
    high object when the ``high`` kind is asked.
    """
    if not 1 <= min_objects <= max_objects <= N_SLOTS // MIN_SLOT_GAP:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {N_SLOTS // MIN_SLOT_GAP}; got {min_objects}, {max_objects}"
        )
    jitter = rng.uniform(-0.04, 0.04, size=6)
    sky = tuple(round(float(v), 4) for v in np.array([0.50, 0.66, 0.86]) + jitter[:3])
    ground = tuple(round(float(v), 4) for v in np.array([0.45, 0.37, 0.28]) + jitter[3:])
    kinds = choose_kinds(rng, n_queries)
    n_horizon = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(MAX_ATTEMPTS):
        layout = _layout(rng, kinds, n_horizon)
        if layout is not None:
            break
    else:  # pragma: no cover - the layouts above always fit 16 slots within a few draws
        raise RuntimeError(f"could not lay out a scene for kinds {kinds}")
    objs = _objects(rng, layout)
    queries = [_ask(rng, k, objs, layout.roles) for k in kinds]
    return Scene(sky=sky, ground=ground, objects=tuple(objs)), queries  # type: ignore[arg-type]


__all__ = ["N_SLOTS", "SLOT_DEG", "choose_kinds", "sample_scene_v2", "slot_distance", "slot_of"]
