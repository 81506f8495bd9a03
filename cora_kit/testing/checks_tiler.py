"""Checks of tilers: ERP ``[B,3,H,W]`` (uint8 or float in [0,1]) -> ``TiledViews`` (views ``[B,V,3,s,s]`` + layout)."""

from __future__ import annotations

import torch

from cora_kit.geometry import TileLayout
from cora_kit.interfaces import TiledViews
from cora_kit.testing.base import Subject, close, expect, finite, randn, register, shape


def check_output_shape(s: Subject) -> str | None:
    """ERP ``[B,3,H,W]`` -> views ``[B,V,3,s,s]`` matching the layout, floats in [0, 1]."""
    tiler = s.make()
    layout = tiler.layout
    expect(isinstance(layout, TileLayout), f"{s.label}.layout is {type(layout).__name__}; expected TileLayout")
    out = tiler(randn(2, 3, 128, 256).sigmoid())
    expect(isinstance(out, TiledViews), f"{s.label} returned {type(out).__name__}; expected TiledViews")
    size = layout.views[0].size
    want = [2, layout.num_views, 3, size, size]
    expect(shape(out.views) == want, f"{s.label} returned views {shape(out.views)}; expected {want} for its layout")
    lo, hi = float(out.views.min()), float(out.views.max())
    expect(out.views.is_floating_point() and lo >= -1e-4 and hi <= 1 + 1e-4,
           f"{s.label}: views must be floats in [0, 1]; got {out.views.dtype} in [{lo:.3g}, {hi:.3g}]")
    return f"{layout.num_views} views of {size}x{size}"


def check_no_nan_on_constant_input(s: Subject) -> str | None:
    """A constant grey ERP (float or uint8) gives constant grey views."""
    tiler = s.make()
    for erp, grey in ((torch.full((1, 3, 64, 128), 0.5), 0.5), (torch.full((1, 3, 64, 128), 128, dtype=torch.uint8), 128 / 255)):
        views = tiler(erp).views
        err = float((views.float() - grey).abs().max())
        expect(finite(views) and err < 1e-3, f"{s.label}: a constant {erp.dtype} ERP ({grey:.3f}) gave views off by {err:.3g}; expected the same constant")
    return None


def check_batch_independence(s: Subject) -> str | None:
    """Each panorama's views do not depend on the rest of the batch; tiling is deterministic."""
    tiler = s.make()
    erp = randn(3, 3, 64, 128).sigmoid()
    full, alone = tiler(erp).views, s.make()(erp[1:2]).views
    ok, diff = close(full[1:2], alone)
    expect(ok, f"{s.label}: panorama 1 differs by {diff:.3g} alone vs in a batch")
    return None


def check_memory_layout(s: Subject) -> str | None:
    """uint8 in HWC memory (what the data path passes: ``read_erp(path, dtype=torch.uint8)``)
    gives the same views as the same values in CHW memory."""
    tiler = s.make()
    hwc = (randn(2, 64, 128, 3).sigmoid() * 255).to(torch.uint8).permute(0, 3, 1, 2)  # [B,3,H,W], HWC memory
    a, b = tiler(hwc).views, tiler(hwc.contiguous()).views
    ok, diff = close(a, b)
    expect(ok, f"{s.label}: a uint8 ERP in HWC memory gave views {diff:.3g} off the same ERP in CHW memory")
    return None


for _func in (check_output_shape, check_no_nan_on_constant_input, check_batch_independence, check_memory_layout):
    register(_func, ["tiler"])
