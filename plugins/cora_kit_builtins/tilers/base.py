"""Shared tiler machinery: input checks, cached sampling plans, global view, assembly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from cora_kit.geometry import TileLayout, load_erp
from cora_kit.interfaces import PluginParams, TiledViews, Tiler
from cora_kit_builtins.tilers.sampling import SamplingPlan, box_resize, build_plan, sample

GlobalResize = Literal["area", "bilinear-aa"]


class TilerParams(PluginParams):
    """Options shared by the ERP tilers."""

    size: int = 256
    include_global: bool = True
    global_resize: GlobalResize = "area"


def as_erp_batch(erp: torch.Tensor | str | Path) -> torch.Tensor:
    """File path, ``[3,H,W]`` or ``[B,3,H,W]`` (uint8, or float in [0,1]) -> float ``[B,3,H,W]``."""
    if isinstance(erp, (str, Path)):
        erp = load_erp(erp)
    if not isinstance(erp, torch.Tensor):
        raise TypeError(f"tiler input must be a tensor or an image path; got {type(erp).__name__}")
    if erp.dim() == 3:
        erp = erp.unsqueeze(0)
    if erp.dim() != 4 or erp.shape[1] != 3:
        raise ValueError(f"tiler expects an ERP [B,3,H,W] (or [3,H,W]); got {list(erp.shape)}")
    h, w = erp.shape[-2:]
    if w != 2 * h:
        raise ValueError(f"tiler expects an equirectangular image with W == 2H; got H={h}, W={w}")
    if erp.dtype == torch.uint8:
        return erp.to(torch.float32).div_(255.0)
    if not erp.is_floating_point():
        raise ValueError(f"tiler expects uint8 or float input; got {erp.dtype}")
    if erp.dtype not in (torch.float32, torch.float64):
        erp = erp.to(torch.float32)
    return erp.contiguous()


class ERPTiler(Tiler):
    """ERP ``[B,3,H,W]`` -> ``[B,V,3,s,s]``: the global view (box filter) + sampled views.

    Subclasses set ``layout``; views with projection ``perspective``/``erp-crop`` are
    sampled through one cached plan, the ``erp`` view is the resized whole panorama.
    """

    def __init__(self, layout: TileLayout, global_resize: str = "area") -> None:
        self.layout = layout
        self.global_resize = global_resize
        self._sampled = [i for i, v in enumerate(layout.views) if v.projection != "erp"]
        self._plans: dict[tuple[int, int, str, torch.dtype], SamplingPlan] = {}

    def plan(self, erp_hw: tuple[int, int], device: torch.device | str = "cpu") -> SamplingPlan:
        """The cached sampling plan for an ERP of ``erp_hw`` on ``device``."""
        device = torch.device(device)
        key = (erp_hw[0], erp_hw[1], str(device), torch.float32)
        if key not in self._plans:
            self._plans[key] = build_plan(self.layout, self._sampled, erp_hw, device)
        return self._plans[key]

    def __call__(self, erp: torch.Tensor | str | Path) -> TiledViews:
        x = as_erp_batch(erp)
        b = x.shape[0]
        views = self.layout.views
        s = views[0].size
        if any(v.size != s for v in views):
            raise ValueError("all views of a layout must share one size")
        out = torch.empty(b, len(views), 3, s, s, dtype=x.dtype, device=x.device)
        if self._sampled:
            tiles = sample(x, self.plan(tuple(x.shape[-2:]), x.device))
            lo, hi = self._sampled[0], self._sampled[-1] + 1
            if self._sampled == list(range(lo, hi)):
                out[:, lo:hi] = tiles.transpose(1, 2)
            else:
                out[:, self._sampled] = tiles.transpose(1, 2)
        for i, v in enumerate(views):
            if v.projection == "erp":
                out[:, i] = box_resize(x, s, self.global_resize)
        return TiledViews(views=out, layout=self.layout)
