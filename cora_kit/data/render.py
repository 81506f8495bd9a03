"""Render a ``Scene`` to an equirectangular (ERP) image, in spherical coordinates.

Every pixel centre ``(row, col)`` of an ``H x W`` ERP is the direction
``lon = ((col + 0.5) / W - 0.5) * 360``, ``lat = (0.5 - (row + 0.5) / H) * 180``. A shape
is defined in the plane tangent to the sphere at the object's centre (gnomonic
coordinates, x to the east/right, y to the north/up), so the ERP shows it with exactly
the distortion a real panorama has: wider near the poles, split across the +-180 seam.
Vectorised numpy over the window of rows and columns the object can reach.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from cora_kit.data.scene import COLOURS, Scene, SceneObject, bounding_radius


@lru_cache(maxsize=4)
def direction_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions ``[H, W, 3]`` (float64, x to lon 0, y to lon 90, z up) and the
    latitude of each row ``[H]`` in degrees."""
    lon = np.radians(((np.arange(width) + 0.5) / width - 0.5) * 360.0)
    lat_deg = (0.5 - (np.arange(height) + 0.5) / height) * 180.0
    lat = np.radians(lat_deg)
    cl = np.cos(lat)[:, None]
    dirs = np.stack(
        [
            cl * np.cos(lon)[None, :],
            cl * np.sin(lon)[None, :],
            np.broadcast_to(np.sin(lat)[:, None], (height, width)),
        ],
        axis=-1,
    )
    dirs.setflags(write=False)
    lat_deg.setflags(write=False)
    return dirs, lat_deg


def tangent_coords(
    dirs: np.ndarray, lon_deg: float, lat_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gnomonic coordinates of directions ``[..., 3]`` around centre (lon, lat).

    Returns ``x, y`` (east, north; tan of the angle) and ``front`` (``d . c > 0``; only
    those points are on the object's side of the sphere).
    """
    lo, la = math.radians(lon_deg), math.radians(lat_deg)
    c = np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])
    e = np.array([-math.sin(lo), math.cos(lo), 0.0])
    n = np.array([-math.sin(la) * math.cos(lo), -math.sin(la) * math.sin(lo), math.cos(la)])
    t = dirs @ c
    front = t > 1e-6
    safe = np.where(front, t, 1.0)
    return (dirs @ e) / safe, (dirs @ n) / safe, front


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    """Inside-test of ``shape`` with tangent-plane half-size ``half`` (= tan(radius))."""
    if shape == "ball":
        return x * x + y * y <= half * half
    if shape == "cube":
        return (np.abs(x) <= 0.85 * half) & (np.abs(y) <= 0.85 * half)
    if shape == "cone":  # triangle, apex up
        return (y >= -half) & (y <= half) & (np.abs(x) <= (half - y) * 0.5)
    if shape == "pillar":
        return (np.abs(x) <= 0.4 * half) & (np.abs(y) <= half)
    raise ValueError(f"unknown shape '{shape}'")


def _window(obj: SceneObject, lat_rows: np.ndarray, width: int) -> tuple[int, int, np.ndarray | slice]:
    """Rows ``[r0, r1)`` and columns (wrapped indices, or all) that can hold the object.

    A great-circle distance is at least the latitude difference, and a cap of radius
    ``rho`` around latitude ``phi`` spans at most ``asin(sin rho / cos phi)`` of
    longitude when it does not cover a pole.
    """
    reach = bounding_radius(obj) + 1.0
    rows = np.nonzero(np.abs(lat_rows - obj.lat) <= reach)[0]
    if rows.size == 0:
        return 0, 0, slice(None)
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    if abs(obj.lat) + reach >= 89.0:
        return r0, r1, slice(None)
    dlon = math.degrees(math.asin(min(1.0, math.sin(math.radians(reach)) / math.cos(math.radians(obj.lat)))))
    centre = (obj.lon / 360.0 + 0.5) * width - 0.5
    half = dlon / 360.0 * width + 2.0
    lo, hi = math.floor(centre - half), math.ceil(centre + half)
    if hi - lo + 1 >= width:
        return r0, r1, slice(None)
    return r0, r1, np.arange(lo, hi + 1) % width


def object_mask(obj: SceneObject, height: int, width: int) -> np.ndarray:
    """Boolean ``[H, W]``: the ERP pixels whose centre lies inside the object."""
    dirs, lat_rows = direction_grid(height, width)
    mask = np.zeros((height, width), dtype=bool)
    r0, r1, cols = _window(obj, lat_rows, width)
    if r1 > r0:
        x, y, front = tangent_coords(dirs[r0:r1, cols], obj.lon, obj.lat)
        band = mask[r0:r1]
        band[:, cols] = front & shape_mask(obj.shape, x, y, math.tan(math.radians(obj.radius)))
    return mask


def render_erp(scene: Scene, height: int, width: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` ERP of ``scene``: sky above the horizon, ground below, objects
    with a mild shading (brighter towards their top) that keeps the colour name clear."""
    if width != 2 * height:
        raise ValueError(f"an ERP is 2:1; got height {height}, width {width}")
    dirs, lat_rows = direction_grid(height, width)
    up = np.clip(lat_rows / 90.0, -1.0, 1.0)[:, None]
    sky = np.asarray(scene.sky) * (1.0 - 0.25 * up)  # [H, 3] darker towards the zenith
    ground = np.asarray(scene.ground) * (1.0 + 0.45 * up)  # darker towards the nadir
    rows = np.where(lat_rows[:, None] > 0, sky, ground)
    img = np.broadcast_to(rows[:, None, :], (height, width, 3)).copy()
    for obj in scene.objects:
        r0, r1, cols = _window(obj, lat_rows, width)
        if r1 <= r0:
            continue
        half = math.tan(math.radians(obj.radius))
        x, y, front = tangent_coords(dirs[r0:r1, cols], obj.lon, obj.lat)
        inside = front & shape_mask(obj.shape, x, y, half)
        shade = 0.9 + 0.1 * np.clip(y / half, -1.0, 1.0)
        colour = np.asarray(COLOURS[obj.colour])
        window = img[r0:r1, cols]  # a copy when cols are indices
        window[inside] = (shade[inside, None] * colour[None, :]).clip(0.0, 1.0)
        img[r0:r1, cols] = window
    return (img * 255.0 + 0.5).astype(np.uint8)
