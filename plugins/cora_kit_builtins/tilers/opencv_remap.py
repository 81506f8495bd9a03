"""The CPU fast path of the ERP tilers: OpenCV ``remap`` on the uint8 panorama with cached maps.

Panoramas arrive as uint8. Converting a whole 2048x1024 ERP to float to sample 0.6M of its
2.1M pixels costs more than the sampling, so this path samples the uint8 image directly
and converts only the views to float:

- all tile pixels of a layout come from one ``cv2.remap`` (bilinear) with the plan's maps
  stacked into one tall map, converted once to OpenCV's fixed-point form
  (``cv2.convertMaps(..., CV_16SC2)``: positions in 1/32 pixel, weights in 15 bits);
  ``BORDER_WRAP`` wraps x across the +-180 deg seam;
- taps beyond a pole (half a pixel above the top row / below the bottom row) read the
  edge row shifted by W/2, as the torch path and py360convert do: the few output pixels
  concerned are remapped again from a two-row strip (the edge row and its shifted copy);
- the global view is ``cv2.resize(INTER_AREA)`` (true area average; an exact box filter
  when H and W are multiples of the view size).

Input layout: a ``[3,H,W]`` uint8 tensor whose memory is HWC (channels last, what image
decoders produce: ``torch.from_numpy(hwc).permute(2, 0, 1)``) is remapped as one
3-channel image with no copy; a CHW-contiguous tensor is remapped plane by plane.

Against exact bilinear sampling in float64 the views differ by the uint8 rounding of the
result (<= 0.5/255) plus OpenCV's 1/32-pixel position grid (<= 1/64 pixel x the local
gradient); ``tests/test_tilers_opencv.py`` checks both, and parity with py360convert's
OpenCV path on the same uint8 image.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cora_kit.geometry import TileLayout, erp_pixel_coords



def opencv_status() -> tuple[bool, str]:
    """(importable, version or the import error)."""
    try:
        import cv2
    except Exception as exc:  # ImportError, or a broken wheel (missing libGL, ...)
        return False, f"{type(exc).__name__}: {exc}"
    return True, str(cv2.__version__)


def _cv2() -> Any:
    import cv2

    return cv2


@dataclass
class RemapPlan:
    """Cached OpenCV maps for the sampled ``views`` of a layout on an ERP of ``erp_hw``.

    ``map1``/``map2``: ``[N*s, s, 2]`` int16 / ``[N*s, s]`` uint16 fixed-point maps, the N
    views stacked vertically. ``top``/``bottom``: ``(flat output pixel index [K], map1
    [1,K,2], map2 [1,K])`` for the pixels whose taps cross a pole (None when none do).
    """

    views: list[int]
    size: int
    erp_hw: tuple[int, int]
    map1: np.ndarray
    map2: np.ndarray
    top: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    bottom: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def build_remap_plan(layout: TileLayout, views: list[int], erp_hw: tuple[int, int]) -> RemapPlan:
    """Maps for ``views`` (layout indices, all of one size) from the exact pixel coordinates."""
    cv2 = _cv2()
    h, w = erp_hw
    sizes = {layout.views[i].size for i in views}
    if len(sizes) != 1:
        raise ValueError(f"all sampled views must share one size; got sizes {sorted(sizes)}")
    s = sizes.pop()
    xy = torch.cat([erp_pixel_coords(layout.views[i], erp_hw, layout.ray_spacing) for i in views]).numpy()
    mx, my = xy[..., 0].astype(np.float32), xy[..., 1].astype(np.float32)
    map1, map2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    flat_x, flat_y = mx.reshape(-1), my.reshape(-1)

    def strip(mask: np.ndarray, y_shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        sx = flat_x[idx].reshape(1, -1)
        sy = (flat_y[idx] + np.float32(y_shift)).reshape(1, -1)
        m1, m2 = cv2.convertMaps(sx, sy, cv2.CV_16SC2)
        return idx, m1, m2

    # strip rows: top = [row 0 shifted by W/2, row 0]; bottom = [row H-1, row H-1 shifted]
    top = strip(flat_y < 0, 1.0)
    bottom = strip(flat_y > h - 1, -(h - 1.0))
    return RemapPlan(list(views), s, erp_hw, map1, map2, top, bottom)


def _is_hwc(img: torch.Tensor) -> bool:
    """``[3,H,W]`` whose memory is HWC (channels last, rows contiguous)."""
    return img.stride() == (1, 3 * img.shape[2], 3)


def _remap_into(cv2: Any, src: np.ndarray, plan: RemapPlan, dst: np.ndarray) -> None:
    """Remap one image (``[H,W,3]`` or a plane ``[H,W]``) into ``dst`` ``[N*s, s(, 3)]``."""
    out = cv2.remap(src, plan.map1, plan.map2, cv2.INTER_LINEAR, dst=dst, borderMode=cv2.BORDER_WRAP)
    if out is not dst:  # OpenCV reallocated (it should not): keep the result anyway
        dst[...] = out
    h, w = plan.erp_hw
    flat = dst.reshape(dst.shape[0] * dst.shape[1], -1)
    for fix, row in ((plan.top, 0), (plan.bottom, h - 1)):
        if fix is None:
            continue
        idx, m1, m2 = fix
        edge = src[row : row + 1]
        shifted = np.roll(edge, w // 2, axis=1)
        rows = np.concatenate([shifted, edge] if row == 0 else [edge, shifted], axis=0)
        vals = cv2.remap(rows, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        flat[idx] = vals.reshape(idx.size, -1)


def _area(cv2: Any, src: np.ndarray, size: int, dst: np.ndarray) -> None:
    out = cv2.resize(src, (size, size), dst=dst, interpolation=cv2.INTER_AREA)
    if out is not dst:
        dst[...] = out


class OutputPool:
    """Output buffers handed out again once nothing refers to them any more.

    A tiler returns a fresh ``[B,V,3,s,s]`` float tensor per call (57 MB at B=8). Where the
    OS hands back memory a process freed (a VM's balloon / free-page reporting, as on the
    development machine), every fresh buffer is first-touched page by page, and that cost
    more than the remap itself at B >= 8 (measured: the first touch of a fresh 57 MB array
    took 0.45 s, of a recycled one 8 ms). So the last ``keep`` buffers are kept and one is
    reused only when no tensor, view or array refers to it (its reference count is ours
    alone): the caller never sees its views change. Buffers over ``max_bytes`` are not kept.
    Thread-safe; a pickled or copied tiler starts with an empty pool.
    """

    def __init__(self, keep: int = 2, max_bytes: int = 256 << 20) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def tensor(self, shape: tuple[int, ...]) -> tuple[np.ndarray, torch.Tensor]:
        """A float32 array of ``shape`` and the tensor sharing it (which holds it busy)."""
        with self._lock:
            for i in range(len(self._bufs)):
                # references: the list, and getrefcount's argument; a live tensor adds one
                if self._bufs[i].shape == shape and sys.getrefcount(self._bufs[i]) == 2:
                    buf = self._bufs[i]
                    return buf, torch.from_numpy(buf)
            buf = np.empty(shape, dtype=np.float32)
            out = torch.from_numpy(buf)
            if buf.nbytes <= self.max_bytes:
                self._bufs = [buf, *self._bufs][: self.keep]
            return buf, out

    def __getstate__(self) -> dict[str, Any]:
        return {"keep": self.keep, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["keep"], state["max_bytes"])


def tile_opencv(
    erp: torch.Tensor, plan: RemapPlan | None, global_views: list[int], num_views: int, size: int,
    pool: OutputPool | None = None,
) -> torch.Tensor:
    """uint8 or float32 ``[B,3,H,W]`` (CPU) -> float32 views ``[B,num_views,3,s,s]`` in [0,1].

    ``plan`` samples its views; ``global_views`` (layout indices) get the area-resized
    whole panorama (callers use this only when H >= s and W >= s); views in neither are
    left for the caller to fill. uint8 is sampled as uint8 and only the views are
    converted (``x * float32(1/255)``). One panorama at a time through a small scratch
    buffer that stays in cache; the output is allocated by numpy, which asks for huge
    pages (first-touch page faults of a fresh torch allocation cost more than the remap).
    """
    cv2 = _cv2()
    if erp.dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"the OpenCV path takes uint8 or float32 input; got {erp.dtype}")
    u8 = erp.dtype == torch.uint8
    dtype = np.uint8 if u8 else np.float32
    b = erp.shape[0]
    hwc = all(_is_hwc(erp[i]) for i in range(b))
    sampled = plan.views if plan is not None else []
    n = len(sampled)
    contiguous = not sampled or sampled == list(range(sampled[0], sampled[0] + n))
    filled = sorted(set(sampled) | set(global_views))
    shape = (b, num_views, 3, size, size)
    out, result = pool.tensor(shape) if pool is not None else (np.empty(shape, np.float32), None)
    scratch = np.empty((num_views, size, size, 3) if hwc else (3, num_views, size, size), dtype=dtype)
    planes = np.empty((num_views, 3, size, size), dtype=np.uint8) if hwc and u8 else None
    for i in range(b):
        if hwc:
            targets = [(erp[i].permute(1, 2, 0).numpy(), scratch)]  # views: HWC memory, no copy
        else:
            img = erp[i].contiguous()
            targets = [(img[c].numpy(), scratch[c]) for c in range(3)]
        for src, dst in targets:
            if plan is not None:
                if contiguous:
                    lo = sampled[0]
                    _remap_into(cv2, src, plan, dst[lo : lo + n].reshape(n * size, *dst.shape[2:]))
                else:
                    tmp = np.empty((n * size, *dst.shape[2:]), dtype=dtype)
                    _remap_into(cv2, src, plan, tmp)
                    dst[sampled] = tmp.reshape(n, *dst.shape[1:])
            for g in global_views:
                _area(cv2, src, size, dst[g])
        _to_chw(cv2, scratch, out[i], filled, hwc, planes)
    return result if result is not None else torch.from_numpy(out)


def _to_chw(cv2: Any, scratch: np.ndarray, out: np.ndarray, views: list[int], hwc: bool, planes: np.ndarray | None) -> None:
    """Scratch views (``[V,s,s,3]`` HWC or ``[3,V,s,s]`` planes) -> ``out`` ``[V,3,s,s]`` float,
    uint8 scaled by 1/255."""
    scale = np.float32(1.0 / 255.0)
    for v in views:
        if hwc and planes is not None:  # uint8 HWC: de-interleave as bytes, then widen
            cv2.split(scratch[v], list(planes[v]))
            np.multiply(planes[v], scale, out=out[v])
        elif hwc:  # float32 HWC
            cv2.split(scratch[v], list(out[v]))
        elif scratch.dtype == np.uint8:
            np.multiply(scratch[:, v], scale, out=out[v])
        else:
            out[v] = scratch[:, v]


__all__ = ["OutputPool", "RemapPlan", "build_remap_plan", "opencv_status", "tile_opencv"]
