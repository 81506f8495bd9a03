"""Query-based captions grounded in a ``Scene``, in the QuIC-360 style.

Each (image, query) gets 3-5 reference paraphrases; the first is the canonical, shortest
form (the training target). The vocabulary is small and regular (about 60 words) and
canonical answers are 1-7 words, so that a tiny model can learn what the image shows:

| kind      | query                                   | canonical answer                 |
|-----------|-----------------------------------------|----------------------------------|
| where     | where is the red cube?                  | behind / on the left             |
| sector    | what is on the left of the viewer?      | a red cube and a blue ball       |
| horizon   | what is above the horizon?              | a yellow cone / nothing          |
| describe  | describe the object above the horizon   | a yellow cone on the left        |
| count     | how many blue objects are there?        | two                              |
| presence  | is there a green ball?                  | yes / no                         |
| colour    | what colour is the pillar?              | white                            |
| relative  | what is to the left of the red cube?    | a blue ball / nothing            |

"Left of X" is the nearest object found by turning left (decreasing longitude, less
than 180 degrees) from X, as one reads the panorama.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cora_kit.data.scene import COLOURS, SECTORS, SHAPES, Scene, SceneObject, wrap_lon

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
SECTOR_PHRASES: dict[str, str] = {
    "front": "in front of the viewer",
    "right": "on the right of the viewer",
    "behind": "behind the viewer",
    "left": "on the left of the viewer",
}
#: The short form used in canonical answers.
SHORT_PHRASES: dict[str, str] = {
    "front": "in front",
    "right": "on the right",
    "behind": "behind",
    "left": "on the left",
}
#: Relative frequency of each query kind (direction/colour/count/presence dominate).
KIND_WEIGHTS: dict[str, float] = {
    "where": 2.0,
    "sector": 2.0,
    "count": 2.0,
    "presence": 1.0,
    "colour": 1.0,
    "horizon": 1.0,
    "describe": 0.5,
    "relative": 1.0,
}
MAX_LISTED = 2  # an answer lists at most this many objects


@dataclass(frozen=True)
class QueryAnswer:
    """One query about an image: its ``kind``, the ``query`` text and 3-5 ``references``
    (``references[0]`` is canonical)."""

    kind: str
    query: str
    references: tuple[str, ...]


def _article_list(objs: list[SceneObject]) -> str:
    return " and ".join(f"a {o.name}" for o in objs) if objs else "nothing"


def _pick_refs(rng: np.random.Generator, canonical: str, others: list[str]) -> tuple[str, ...]:
    pool = list(dict.fromkeys(o for o in others if o != canonical))
    k = int(rng.integers(3, 6)) - 1
    order = rng.permutation(len(pool))[: min(k, len(pool))]
    return (canonical, *[pool[i] for i in sorted(order)])


def sector_objects(scene: Scene, sector: str) -> list[SceneObject]:
    """Objects in a sector, left to right as the viewer turned to it sees them."""
    objs = [o for o in scene.objects if o.sector == sector]
    return sorted(objs, key=lambda o: wrap_lon(o.lon - SECTORS[sector]))


def left_neighbour(scene: Scene, obj: SceneObject, side: str) -> SceneObject | None:
    """Nearest object to the ``side`` ("left"/"right") of ``obj`` within 180 degrees."""
    best, best_off = None, 180.0
    for other in scene.objects:
        if other is obj:
            continue
        delta = (obj.lon - other.lon) if side == "left" else (other.lon - obj.lon)
        off = delta % 360.0
        if 0.0 < off < best_off:
            best, best_off = other, off
    return best


def _where(rng: np.random.Generator, scene: Scene) -> QueryAnswer:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    p, short = SECTOR_PHRASES[o.sector], SHORT_PHRASES[o.sector]
    e = "in the sky" if o.in_sky else "on the ground"
    refs = _pick_refs(rng, short, [f"it is {p}", f"the {o.name} is {short}", f"{short}, {e}", f"{e}, {p}"])
    return QueryAnswer("where", f"where is the {o.name}?", refs)


def _sector(rng: np.random.Generator, scene: Scene) -> QueryAnswer | None:
    sector = list(SECTORS)[int(rng.integers(len(SECTORS)))]
    objs = sector_objects(scene, sector)
    p = SECTOR_PHRASES[sector]
    lst = _article_list(objs)
    if objs:
        short = SHORT_PHRASES[sector]
        others = [f"there is {lst}", f"i see {lst}", f"{lst} {short}", f"{short} there is {lst}"]
    else:
        others = ["there is nothing", "nothing is there", "no objects", f"nothing {SHORT_PHRASES[sector]}"]
    return QueryAnswer("sector", f"what is {p}?", _pick_refs(rng, lst, others))


def _horizon(rng: np.random.Generator, scene: Scene) -> QueryAnswer | None:
    above = bool(rng.random() < 0.5)
    objs = sorted((o for o in scene.objects if o.in_sky == above), key=lambda o: o.lon)
    if len(objs) > MAX_LISTED:
        return None
    where = "above" if above else "below"
    lst = _article_list(objs)
    if objs:
        others = [f"there is {lst}", f"i see {lst}", f"{lst} {where} the horizon", f"{where} it is {lst}"]
    else:
        others = ["there is nothing", "nothing is there", "no objects", f"nothing {where} the horizon"]
    return QueryAnswer("horizon", f"what is {where} the horizon?", _pick_refs(rng, lst, others))


def _describe(rng: np.random.Generator, scene: Scene) -> QueryAnswer | None:
    sky = [o for o in scene.objects if o.in_sky]
    if len(sky) != 1:
        return None
    o = sky[0]
    p = SHORT_PHRASES[o.sector]
    canonical = f"a {o.name} {p}"
    others = [
        f"there is a {o.name} {p}",
        f"a {o.name} in the sky {p}",
        f"{p} there is a {o.name}",
        f"the {o.name}, {p}",
    ]
    query = "describe the object above the horizon"
    return QueryAnswer("describe", query, _pick_refs(rng, canonical, others))


def _count(rng: np.random.Generator, scene: Scene) -> QueryAnswer:
    present = sorted({o.colour for o in scene.objects}, key=list(COLOURS).index)
    absent = [c for c in COLOURS if c not in present]
    pool = present if (not absent or rng.random() < 0.7) else absent
    c = pool[int(rng.integers(len(pool)))]
    n = sum(o.colour == c for o in scene.objects)
    w = NUMBER_WORDS[n]
    if n == 0:
        others = ["none", "there are none", f"no {c} objects", "i count zero"]
    elif n == 1:
        others = ["there is one", f"one {c} object", "i count one", f"just one {c} object"]
    else:
        others = [f"there are {w}", f"{w} {c} objects", f"i count {w}", f"{w} of them"]
    return QueryAnswer("count", f"how many {c} objects are there?", _pick_refs(rng, w, others))


def _presence(rng: np.random.Generator, scene: Scene) -> QueryAnswer:
    names = [o.name for o in scene.objects]
    if rng.random() < 0.5:
        name = names[int(rng.integers(len(names)))]
        others = ["yes, there is", f"yes, there is a {name}", "yes, there is one", f"yes, a {name}"]
        return QueryAnswer("presence", f"is there a {name}?", _pick_refs(rng, "yes", others))
    # an absent combination that shares a colour or a shape with the scene when possible
    colours = {o.colour for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    candidates = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in names]
    near = [n for n in candidates if n.split()[0] in colours or n.split()[1] in shapes]
    pool = near or candidates
    name = pool[int(rng.integers(len(pool)))]
    others = ["no, there is not", f"there is no {name}", "no, there is none", f"no {name}"]
    return QueryAnswer("presence", f"is there a {name}?", _pick_refs(rng, "no", others))


def _colour(rng: np.random.Generator, scene: Scene) -> QueryAnswer | None:
    unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if not unique:
        return None
    o = unique[int(rng.integers(len(unique)))]
    c = o.colour
    others = [f"it is {c}", f"the {o.shape} is {c}", f"a {c} {o.shape}", f"{c} colour"]
    return QueryAnswer("colour", f"what colour is the {o.shape}?", _pick_refs(rng, o.colour, others))


def _relative(rng: np.random.Generator, scene: Scene) -> QueryAnswer:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    side = "left" if rng.random() < 0.5 else "right"
    n = left_neighbour(scene, o, side)
    if n is None:
        canonical = "nothing"
        others = ["there is nothing", "nothing is there", "no objects", f"nothing to its {side}"]
    else:
        canonical = f"a {n.name}"
        others = [f"the {n.name}", f"there is a {n.name}", f"a {n.name} is to its {side}", f"i see a {n.name}"]
    query = f"what is to the {side} of the {o.name}?"
    return QueryAnswer("relative", query, _pick_refs(rng, canonical, others))


_BUILDERS = {
    "where": _where,
    "sector": _sector,
    "horizon": _horizon,
    "describe": _describe,
    "count": _count,
    "presence": _presence,
    "colour": _colour,
    "relative": _relative,
}


def make_queries(rng: np.random.Generator, scene: Scene, n: int) -> list[QueryAnswer]:
    """``n`` queries of distinct kinds about ``scene`` (fewer only if too few kinds apply)."""
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    order = rng.choice(len(kinds), size=len(kinds), replace=False, p=weights / weights.sum())
    out: list[QueryAnswer] = []
    for i in order:
        qa = _BUILDERS[kinds[int(i)]](rng, scene)
        if qa is not None:
            out.append(qa)
        if len(out) == n:
            break
    return out
