"""Perspective tilers: ``e2p`` (the seed's 1 global + 8 tiles) and ``cubemap``.

Seed defaults (CORA-architecture.md, E2P tiling): global view = the whole ERP resized to
256x256; 8 tiles at pitch 0, yaw 0..315 step 45, FOV 90, 256x256 (50% overlap).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cora_kit.geometry import TileLayout, ViewCamera
from cora_kit_builtins.tilers.base import ERPTiler, TilerParams


class E2PParams(TilerParams):
    """``num_tiles`` around the horizon at ``pitch_deg`` every ``stride_deg`` (default
    360/num_tiles), plus optional extra rings: ``pitch_rings`` (e.g. [60, -60] covers the
    poles) of ``ring_tiles`` tiles each."""

    num_tiles: int = Field(8, ge=1)
    fov_deg: float = Field(90.0, gt=0, lt=180)
    stride_deg: float | None = Field(None, gt=0)
    pitch_deg: float = Field(0.0, ge=-90, le=90)
    pitch_rings: list[float] = Field(default_factory=list)
    ring_tiles: int = Field(4, ge=1)
    ray_spacing: Literal["centres", "py360convert"] = "centres"

    @model_validator(mode="after")
    def _check_rings(self) -> E2PParams:
        for p in self.pitch_rings:
            if not -90 <= p <= 90:
                raise ValueError(f"pitch_rings values must be in [-90, 90]; got {p}")
        return self


def e2p_layout(
    num_tiles: int = 8,
    fov_deg: float = 90.0,
    stride_deg: float | None = None,
    pitch_deg: float = 0.0,
    pitch_rings: list[float] | tuple[float, ...] = (),
    ring_tiles: int = 4,
    size: int = 256,
    include_global: bool = True,
    ray_spacing: str = "centres",
) -> TileLayout:
    """Global view (optional) + a ring of tiles by yaw + extra pitch rings."""
    stride = 360.0 / num_tiles if stride_deg is None else stride_deg
    views: list[ViewCamera] = []
    if include_global:
        views.append(ViewCamera(0.0, 0.0, 360.0, size, is_global=True, projection="erp", vfov_deg=180.0))
    views += [ViewCamera(i * stride, pitch_deg, fov_deg, size) for i in range(num_tiles)]
    for p in pitch_rings:
        views += [ViewCamera(i * 360.0 / ring_tiles, p, fov_deg, size) for i in range(ring_tiles)]
    return TileLayout(tuple(views), name="e2p", ray_spacing=ray_spacing)


class E2PTiler(ERPTiler):
    """1 global view + perspective tiles by yaw (seed: 8 tiles, FOV 90, stride 45, 256 px)."""

    def __init__(
        self,
        num_tiles: int = 8,
        fov_deg: float = 90.0,
        stride_deg: float | None = None,
        pitch_deg: float = 0.0,
        pitch_rings: list[float] | tuple[float, ...] = (),
        ring_tiles: int = 4,
        size: int = 256,
        include_global: bool = True,
        global_resize: str = "area",
        ray_spacing: str = "centres",
        backend: str = "auto",
    ) -> None:
        layout = e2p_layout(
            num_tiles, fov_deg, stride_deg, pitch_deg, tuple(pitch_rings), ring_tiles,
            size, include_global, ray_spacing,
        )
        super().__init__(layout, global_resize, backend)


class CubemapParams(TilerParams):
    """Six FOV-90 faces (front, right, back, left, up, down) + the global view."""

    ray_spacing: Literal["centres", "py360convert"] = "centres"


class CubemapTiler(ERPTiler):
    """6 cube faces at yaw 0/90/180/270 and pitch +-90 (+ global view), same geometry code.

    The up/down faces are roll-free cameras looking straight up/down whose image top
    points to yaw 180 (up) / yaw 0 (down), as ``py360convert.e2p(v_deg=+-90)``.
    """

    def __init__(
        self,
        size: int = 256,
        include_global: bool = True,
        global_resize: str = "area",
        ray_spacing: str = "centres",
        backend: str = "auto",
    ) -> None:
        views: list[ViewCamera] = []
        if include_global:
            views.append(ViewCamera(0.0, 0.0, 360.0, size, is_global=True, projection="erp", vfov_deg=180.0))
        views += [ViewCamera(yaw, 0.0, 90.0, size) for yaw in (0.0, 90.0, 180.0, 270.0)]
        views += [ViewCamera(0.0, 90.0, 90.0, size), ViewCamera(0.0, -90.0, 90.0, size)]
        super().__init__(TileLayout(tuple(views), name="cubemap", ray_spacing=ray_spacing), global_resize, backend)
