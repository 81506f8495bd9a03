"""Shared tiler machinery: input checks, backend choice, cached sampling plans, assembly.

Two interchangeable backends compute the same views (same geometry, same seam and pole
wrap, same global view):

- ``opencv`` (``tilers.opencv_remap``): ``cv2.remap`` with cached fixed-point maps on the
  uint8 panorama, only the views converted to float; CPU tensors without gradients;
- ``torch`` (``tilers.sampling``): one ``grid_sample`` over cached grids, exact bilinear in
  float, any device, differentiable.

``backend="auto"`` (default) takes OpenCV for uint8 CPU input (what the data pipeline
delivers) and torch for float input (exact; gradients; CUDA). ``"opencv"`` also remaps
float CPU input with OpenCV (float32) and refuses CUDA tensors and tensors that need
gradients; ``"torch"`` never uses OpenCV. Asking for ``"opencv"`` where it does not import
is a ``BackendUnavailableError``; ``auto`` then runs torch and says so in ``backend``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from cora_kit.errors import BackendUnavailableError
from cora_kit.geometry import TileLayout, load_erp
from cora_kit.interfaces import PluginParams, TiledViews, Tiler
from cora_kit_builtins.tilers.opencv_remap import OutputPool, RemapPlan, build_remap_plan, opencv_status, tile_opencv
from cora_kit_builtins.tilers.sampling import SamplingPlan, box_resize, build_plan, sample

GlobalResize = Literal["area", "bilinear-aa"]
TilerBackend = Literal["auto", "opencv", "torch"]
BACKENDS = ("auto", "opencv", "torch")


class TilerParams(PluginParams):
    """Options shared by the ERP tilers: view ``size``, ``include_global``, ``global_resize``
    (``area`` or ``bilinear-aa``) and ``backend`` (``auto``, ``opencv`` or ``torch``, see
    ``tilers.base``)."""

    size: int = 256
    include_global: bool = True
    global_resize: GlobalResize = "area"
    backend: TilerBackend = "auto"


def backend_label(backend: str, samples: bool = True) -> str:
    """What ``backend`` runs here (``samples``: the layout has tiles, not only the global view)."""
    ok, info = opencv_status()
    cv = f"OpenCV {info} {'remap' if samples else 'resize'}"
    torch_label = "torch grid_sample" if samples else "torch area resize"
    if backend == "torch":
        return torch_label
    if backend == "opencv":
        return f"{cv} (CPU)" if ok else f"unavailable: OpenCV does not import ({info})"
    if not ok:
        return f"{torch_label} (OpenCV does not import: {info})"
    return f"{cv} for uint8 CPU input, {torch_label} otherwise"


def erp_batch(erp: torch.Tensor | str | Path) -> torch.Tensor:
    """File path, ``[3,H,W]`` or ``[B,3,H,W]`` (uint8, or float in [0,1]) -> ``[B,3,H,W]``.

    uint8 stays uint8 (in whatever memory layout it came); other integer dtypes and
    shapes that are not a 2:1 RGB panorama are errors.
    """
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
    if erp.dtype != torch.uint8 and not erp.is_floating_point():
        raise ValueError(f"tiler expects uint8 or float input; got {erp.dtype}")
    return erp


def as_erp_batch(erp: torch.Tensor | str | Path) -> torch.Tensor:
    """Like ``erp_batch``, then float ``[B,3,H,W]`` in [0,1] (float32 unless float64)."""
    erp = erp_batch(erp)
    if erp.dtype == torch.uint8:
        return erp.to(torch.float32).div_(255.0)
    if erp.dtype not in (torch.float32, torch.float64):
        erp = erp.to(torch.float32)
    return erp.contiguous()


class ERPTiler(Tiler):
    """ERP ``[B,3,H,W]`` -> ``[B,V,3,s,s]``: the global view (area filter) + sampled views.

    Subclasses set ``layout``; views with projection ``perspective``/``erp-crop`` are
    sampled through one cached plan, the ``erp`` view is the resized whole panorama.
    ``backend`` (attribute): what this instance runs (see the module docstring).
    """

    def __init__(self, layout: TileLayout, global_resize: str = "area", backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"tiler backend must be one of {BACKENDS}; got {backend!r}")
        self.layout = layout
        self.global_resize = global_resize
        self._sampled = [i for i, v in enumerate(layout.views) if v.projection != "erp"]
        self._global = [i for i, v in enumerate(layout.views) if v.projection == "erp"]
        ok, info = opencv_status()
        if backend == "opencv" and not ok:
            raise BackendUnavailableError(
                f"tiler backend 'opencv' needs OpenCV ({info}); "
                "install opencv-python-headless or use backend='torch' (or 'auto')"
            )
        self.requested_backend = backend
        self._opencv = ok and backend != "torch"
        self.backend = backend_label(backend, samples=bool(self._sampled))
        self._plans: dict[tuple[int, int, str, torch.dtype], SamplingPlan] = {}
        self._remap_plans: dict[tuple[int, int], RemapPlan] = {}
        self._outputs = OutputPool()

    def plan(self, erp_hw: tuple[int, int], device: torch.device | str = "cpu") -> SamplingPlan:
        """The cached torch sampling plan for an ERP of ``erp_hw`` on ``device``."""
        device = torch.device(device)
        key = (erp_hw[0], erp_hw[1], str(device), torch.float32)
        if key not in self._plans:
            self._plans[key] = build_plan(self.layout, self._sampled, erp_hw, device)
        return self._plans[key]

    def remap_plan(self, erp_hw: tuple[int, int]) -> RemapPlan:
        """The cached OpenCV maps for an ERP of ``erp_hw``."""
        key = (int(erp_hw[0]), int(erp_hw[1]))
        if key not in self._remap_plans:
            self._remap_plans[key] = build_remap_plan(self.layout, self._sampled, key)
        return self._remap_plans[key]

    def _size(self) -> int:
        s = self.layout.views[0].size
        if any(v.size != s for v in self.layout.views):
            raise ValueError("all views of a layout must share one size")
        return s

    def _use_opencv(self, x: torch.Tensor) -> bool:
        if not self._opencv:
            return False
        if self.requested_backend == "opencv":
            if x.device.type != "cpu" or x.requires_grad:
                raise BackendUnavailableError(
                    f"tiler backend 'opencv' runs on CPU tensors without gradients; got a {x.device} tensor"
                    f"{' that requires grad' if x.requires_grad else ''}; use backend='auto' or 'torch'"
                )
            return True
        return x.dtype == torch.uint8 and x.device.type == "cpu"

    def __call__(self, erp: torch.Tensor | str | Path) -> TiledViews:
        x = erp_batch(erp)
        s = self._size()
        views = self._tile_opencv(x, s) if self._use_opencv(x) else self._tile_torch(as_erp_batch(x), s)
        return TiledViews(views=views, layout=self.layout)

    def _tile_opencv(self, x: torch.Tensor, s: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        if x.is_floating_point() and x.dtype != torch.float32:
            x = x.to(torch.float32)
        plan = self.remap_plan((h, w)) if self._sampled else None
        cv_global = self._global if self.global_resize == "area" and h >= s and w >= s else []
        views = tile_opencv(x, plan, cv_global, self.layout.num_views, s, self._outputs)
        rest = [i for i in self._global if i not in cv_global]
        if rest:  # bilinear-aa, or an ERP smaller than a view: the torch filter on floats
            glob = box_resize(as_erp_batch(x), s, self.global_resize).to(views.dtype)
            for i in rest:
                views[:, i] = glob
        return views

    def _tile_torch(self, x: torch.Tensor, s: int) -> torch.Tensor:
        b = x.shape[0]
        out = torch.empty(b, self.layout.num_views, 3, s, s, dtype=x.dtype, device=x.device)
        if self._sampled:
            tiles = sample(x, self.plan(tuple(x.shape[-2:]), x.device))
            lo, hi = self._sampled[0], self._sampled[-1] + 1
            if self._sampled == list(range(lo, hi)):
                out[:, lo:hi] = tiles.transpose(1, 2)
            else:
                out[:, self._sampled] = tiles.transpose(1, 2)
        if self._global:
            glob = box_resize(x, s, self.global_resize)
            for i in self._global:
                out[:, i] = glob
        return out
