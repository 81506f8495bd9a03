"""The scene model of the synthetic 360-degree set: objects on a sphere around the viewer.

Conventions (those of ``cora_kit.geometry``): longitude ``lon`` in degrees in
``(-180, 180]`` increases to the right, 0 is the ERP centre and the direction the viewer
faces; latitude ``lat`` in ``[-90, 90]`` increases upwards, 0 is the horizon. An
object's ``radius`` is its angular half-size in degrees.

Scenes are sampled so that every caption about them is unambiguous: no two objects share
colour and shape, objects do not overlap, none crosses the horizon or covers a pole,
and each object's centre lies well inside one of the four viewer-relative sectors
(front, right, behind, left; 90 degrees each, boundaries at +-45 and +-135).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: Colour name -> RGB in [0, 1]; few, very distinct colours (learnable by a tiny model).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.08, 0.18, 0.92),
    "yellow": (0.96, 0.86, 0.08),
    "white": (0.98, 0.98, 0.98),
    "black": (0.06, 0.06, 0.06),
}
#: Shapes, drawn in the plane tangent to the sphere at the object's centre.
SHAPES: tuple[str, ...] = ("ball", "cube", "cone", "pillar")
#: Sector name -> centre longitude (degrees).
SECTORS: dict[str, float] = {"front": 0.0, "right": 90.0, "behind": 180.0, "left": -90.0}

MIN_RADIUS_DEG = 10.0  # angular size 20..50 degrees
MAX_RADIUS_DEG = 25.0
SECTOR_HALF_SPREAD_DEG = 30.0  # centre within +-30 of the sector centre (15 deg from a boundary)
HORIZON_MARGIN_DEG = 4.0
POLE_MARGIN_DEG = 6.0
GAP_DEG = 4.0  # minimum angular gap between two objects' bounding caps
MAX_PER_SECTOR = 2
NEAR_HORIZON_SPAN_DEG = 20.0  # usual centre latitude: within 20 deg of the lowest allowed
HIGH_LAT_PROB = 0.1  # else anywhere up to the pole margin (strongly distorted in the ERP)


@dataclass(frozen=True)
class SceneObject:
    """One object: ``shape`` and ``colour`` names, centre (``lon``, ``lat``) and angular
    ``radius`` in degrees."""

    shape: str
    colour: str
    lon: float
    lat: float
    radius: float

    @property
    def name(self) -> str:
        """``"red cube"``."""
        return f"{self.colour} {self.shape}"

    @property
    def sector(self) -> str:
        return sector_of(self.lon)

    @property
    def in_sky(self) -> bool:
        """Above the horizon (the whole object: scenes never straddle the horizon)."""
        return self.lat > 0


@dataclass(frozen=True)
class Scene:
    """Background tints (RGB in [0, 1]) and the objects, in placement order."""

    sky: tuple[float, float, float]
    ground: tuple[float, float, float]
    objects: tuple[SceneObject, ...]

    def to_json(self) -> dict:
        return {
            "sky": list(self.sky),
            "ground": list(self.ground),
            "objects": [asdict(o) for o in self.objects],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        return cls(
            sky=tuple(data["sky"]),
            ground=tuple(data["ground"]),
            objects=tuple(SceneObject(**o) for o in data["objects"]),
        )


def wrap_lon(lon: float) -> float:
    """Longitude in degrees wrapped to ``(-180, 180]``."""
    out = math.fmod(lon + 180.0, 360.0)
    if out <= 0:
        out += 360.0
    return out - 180.0


def sector_of(lon: float) -> str:
    """Viewer-relative sector of a longitude: front ``|lon|<45``, right ``45..135``,
    behind ``|lon|>135``, left ``-135..-45``."""
    lon = wrap_lon(lon)
    if -45.0 <= lon < 45.0:
        return "front"
    if 45.0 <= lon < 135.0:
        return "right"
    if -135.0 <= lon < -45.0:
        return "left"
    return "behind"


def angular_distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in degrees (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def bounding_radius(obj: SceneObject) -> float:
    """Angular radius of a cap that contains the whole drawn shape (degrees).

    Shapes are drawn inside the tangent-plane square ``|x|,|y| <= tan(radius)``, whose
    corners lie at ``atan(sqrt(2) tan(radius))`` from the centre.
    """
    return math.degrees(math.atan(math.sqrt(2.0) * math.tan(math.radians(obj.radius))))


def _try_place(
    rng: np.random.Generator, placed: list[SceneObject], shape: str, colour: str
) -> SceneObject | None:
    counts = {s: 0 for s in SECTORS}
    for o in placed:
        counts[o.sector] += 1
    free = [s for s in SECTORS if counts[s] < MAX_PER_SECTOR]
    if not free:
        return None
    sector = free[int(rng.integers(len(free)))]
    radius = float(rng.uniform(MIN_RADIUS_DEG, MAX_RADIUS_DEG))
    lon = wrap_lon(SECTORS[sector] + float(rng.uniform(-SECTOR_HALF_SPREAD_DEG, SECTOR_HALF_SPREAD_DEG)))
    probe = SceneObject(shape, colour, lon, 0.0, radius)
    reach = bounding_radius(probe)
    lo, hi = reach + HORIZON_MARGIN_DEG, 90.0 - reach - POLE_MARGIN_DEG
    if hi <= lo:
        return None
    if rng.random() >= HIGH_LAT_PROB:  # most objects stay where the pitch-0 tiles see them
        hi = min(hi, lo + NEAR_HORIZON_SPAN_DEG)
    lat = float(rng.uniform(lo, hi)) * (1.0 if rng.random() < 0.4 else -1.0)
    obj = SceneObject(shape, colour, round(lon, 3), round(lat, 3), round(radius, 3))
    for other in placed:
        gap = angular_distance(obj.lon, obj.lat, other.lon, other.lat)
        if gap < bounding_radius(obj) + bounding_radius(other) + GAP_DEG:
            return None
    return obj


def sample_scene(rng: np.random.Generator, min_objects: int = 2, max_objects: int = 6) -> Scene:
    """A random scene with ``min_objects..max_objects`` objects of distinct (colour, shape)."""
    if not 1 <= min_objects <= max_objects <= 4 * MAX_PER_SECTOR:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {4 * MAX_PER_SECTOR}; "
            f"got {min_objects}, {max_objects}"
        )
    jitter = rng.uniform(-0.04, 0.04, size=6)
    sky = tuple(round(float(v), 4) for v in np.array([0.50, 0.66, 0.86]) + jitter[:3])
    ground = tuple(round(float(v), 4) for v in np.array([0.45, 0.37, 0.28]) + jitter[3:])
    target = int(rng.integers(min_objects, max_objects + 1))
    colours, shapes = list(COLOURS), list(SHAPES)
    placed: list[SceneObject] = []
    attempts = 0
    while len(placed) < target and attempts < 400:
        attempts += 1
        colour = colours[int(rng.integers(len(colours)))]
        shape = shapes[int(rng.integers(len(shapes)))]
        if any(o.colour == colour and o.shape == shape for o in placed):
            continue
        obj = _try_place(rng, placed, shape, colour)
        if obj is not None:
            placed.append(obj)
    if len(placed) < min_objects:  # pragma: no cover - 400 attempts always suffice
        raise RuntimeError("could not place the minimum number of objects")
    return Scene(sky=sky, ground=ground, objects=tuple(placed))  # type: ignore[arg-type]
