"""Baseline tilers without projection: ``erp-global`` and ``erp-grid`` (issue 13, item 1).

They make the decomposition itself an ablation axis (the paper attributes most of CORA's
gain over native VLMs to ERP -> perspective tiling):

- ``erp-global``: the whole ERP resized to one ``s x s`` view, what a plain VLM sees. That
  view is the model's only view, so it is a *tile* (``is_global=False``, projection
  ``erp``): every stitcher hands its tokens to the LLM whatever ``include_global`` says, the
  seed-yaw PE has a tile to take its FOV from, and Stage 1 runs on it. It overlaps nothing:
  its correspondences are empty, so an overlap loss other than ``none`` fails, naming the
  layout (``cora_kit.overlap``); ``stride-views`` refuses it (nothing to stride over).
- ``erp-grid``: the global view + ``num_tiles`` unprojected ERP rectangles ("anyres"
  crops), each ``fov_deg`` of longitude x ``vfov_deg`` of latitude centred on (yaw, pitch),
  resized to ``s x s``. Default: 8 crops 90 deg wide every 45 deg (the e2p overlap pattern)
  over the full latitude range, so views (9) and stitched tokens (1,408 with
  ``stride-views``) equal e2p's. A crop's pixels map to lon/lat linearly
  (``ViewCamera(projection="erp-crop")``), so crop i's right half *is* crop i+1's left half:
  correspondences, PE and stitchers are exact.

Both reuse the shared ERP sampler (``tilers.sampling``): crops are bilinear samples at the
view's pixel centres with exact seam wrap, like the e2p tiles; the global view is the same
box filter as e2p's.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from cora_kit.geometry import TileLayout, ViewCamera
from cora_kit.interfaces import PluginParams
from cora_kit_builtins.tilers.base import ERPTiler, GlobalResize, TilerBackend, TilerParams


class ERPGlobalParams(PluginParams):
    """``size``: the view's side in pixels; ``global_resize``: ``area`` or ``bilinear-aa``;
    ``backend``: ``auto``, ``opencv`` or ``torch`` (see ``tilers.base``)."""

    size: int = Field(256, ge=1)
    global_resize: GlobalResize = "area"
    backend: TilerBackend = "auto"


class ERPGridParams(TilerParams):
    """``num_tiles`` ERP crops around ``pitch_deg`` every ``stride_deg`` (default
    360/num_tiles), each ``fov_deg`` of longitude x ``vfov_deg`` of latitude."""

    size: int = Field(256, ge=1)
    num_tiles: int = Field(8, ge=1)
    fov_deg: float = Field(90.0, gt=0, le=360)
    vfov_deg: float = Field(180.0, gt=0, le=180)
    stride_deg: float | None = Field(None, gt=0)
    pitch_deg: float = Field(0.0, ge=-90, le=90)

    @model_validator(mode="after")
    def _check_latitude(self) -> ERPGridParams:
        _check_lat_range(self.pitch_deg, self.vfov_deg)
        return self


def _check_lat_range(pitch_deg: float, vfov_deg: float) -> None:
    """A crop must stay inside latitude [-90, 90] (an ERP rectangle does not cross a pole)."""
    lo, hi = pitch_deg - vfov_deg / 2, pitch_deg + vfov_deg / 2
    if lo < -90 - 1e-9 or hi > 90 + 1e-9:
        raise ValueError(
            f"an ERP crop of vfov_deg={vfov_deg:g} at pitch_deg={pitch_deg:g} spans latitude "
            f"[{lo:g}, {hi:g}]; it must stay within [-90, 90] (lower vfov_deg or move pitch_deg)"
        )


def erp_global_layout(size: int = 256) -> TileLayout:
    """One view: the whole ERP (360 x 180 deg) as the only, non-global, view."""
    return TileLayout((ViewCamera(0.0, 0.0, 360.0, size, projection="erp", vfov_deg=180.0),), name="erp-global")


class ERPGlobalTiler(ERPTiler):
    """ERP ``[B,3,H,W]`` -> ``[B,1,3,s,s]``: the whole panorama resized (no tiles)."""

    def __init__(self, size: int = 256, global_resize: str = "area", backend: str = "auto") -> None:
        super().__init__(erp_global_layout(size), global_resize, backend)


class ERPGridTiler(ERPTiler):
    """ERP ``[B,3,H,W]`` -> ``[B,V,3,s,s]``: global view (optional) + ``num_tiles`` ERP crops
    by yaw, crop i centred on ``i * stride`` (default V = 9)."""

    def __init__(
        self,
        num_tiles: int = 8,
        fov_deg: float = 90.0,
        vfov_deg: float = 180.0,
        stride_deg: float | None = None,
        pitch_deg: float = 0.0,
        size: int = 256,
        include_global: bool = True,
        global_resize: str = "area",
        backend: str = "auto",
    ) -> None:
        if num_tiles < 1 or fov_deg <= 0 or fov_deg > 360 or not 0 < vfov_deg <= 180:
            raise ValueError(
                f"erp-grid needs num_tiles >= 1, 0 < fov_deg <= 360, 0 < vfov_deg <= 180; "
                f"got num_tiles={num_tiles}, fov_deg={fov_deg}, vfov_deg={vfov_deg}"
            )
        _check_lat_range(pitch_deg, vfov_deg)
        stride = 360.0 / num_tiles if stride_deg is None else stride_deg
        views: list[ViewCamera] = []
        if include_global:
            views.append(ViewCamera(0.0, 0.0, 360.0, size, is_global=True, projection="erp", vfov_deg=180.0))
        views += [
            ViewCamera(i * stride, pitch_deg, fov_deg, size, projection="erp-crop", vfov_deg=vfov_deg)
            for i in range(num_tiles)
        ]
        super().__init__(TileLayout(tuple(views), name="erp-grid"), global_resize, backend)
