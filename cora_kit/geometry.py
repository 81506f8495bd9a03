"""Sphere <-> view geometry: cameras, tile layouts and overlap correspondences.

Conventions (DESIGN.md section 4): longitude (yaw) increases to the right, latitude
(pitch) increases upwards, angles in degrees in the public dataclasses. A view's patch
grid is indexed row-major; an integer (row, col) is a patch centre, so column ``c``
spans ``[c - 0.5, c + 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ViewCamera:
    """One view of a layout.

    ``projection`` is ``"perspective"`` (gnomonic tile), ``"erp"`` (the whole panorama
    resized, the global view) or ``"erp-crop"`` (an unprojected ERP rectangle).
    """

    yaw_deg: float
    pitch_deg: float
    fov_deg: float
    size: int
    is_global: bool = False
    projection: str = "perspective"


@dataclass(frozen=True)
class TileLayout:
    """Ordered views: the global view first (if any), then tiles by pitch ring and yaw."""

    views: tuple[ViewCamera, ...]
    name: str = "e2p"

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def global_index(self) -> int | None:
        """Index of the global view in ``views``, or None."""
        return next((i for i, v in enumerate(self.views) if v.is_global), None)

    @property
    def tile_indices(self) -> list[int]:
        """Indices of the non-global views, in layout order."""
        return [i for i, v in enumerate(self.views) if not v.is_global]


@dataclass
class OverlapPair:
    """Patches of view ``src`` whose centre ray is visible in view ``dst``.

    ``src_index``: LongTensor ``[M]``, flat row-major patch index in ``src``.
    ``dst_rowcol``: FloatTensor ``[M, 2]``, continuous (row, col) in ``dst`` patch units.
    """

    src: int
    dst: int
    src_index: torch.Tensor
    dst_rowcol: torch.Tensor


@dataclass
class Correspondences:
    """Every ordered pair of overlapping views of a layout (see ``overlap_correspondences``)."""

    pairs: list[OverlapPair]
    grid_hw: tuple[int, int]
    mode: str = "geometric"
    view_indices: list[int] = field(default_factory=list)
