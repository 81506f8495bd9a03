"""Render one item (ERP, its views, the query and references) into a PNG with matplotlib,
so a user can look at what the model sees."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from cora_kit.data.csv_loaders import Sample
from cora_kit.data.dataset import decode_erp


def _view_title(layout: Any, i: int) -> str:
    cam = layout.views[i]
    if getattr(cam, "is_global", False):
        return "global"
    return f"yaw {cam.yaw_deg:g}, pitch {cam.pitch_deg:g}"


def render_item(
    sample: Sample,
    out: str | Path,
    tiler: Any,
    erp_size: tuple[int, int] | None = None,
    dpi: int = 100,
) -> Path:
    """Write ``out`` (PNG): the ERP with the viewer-relative directions on its x axis, the
    ``tiler``'s views (``tiler(erp [1,3,H,W]) -> TiledViews``), the query and references."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    erp = decode_erp(sample.image_path, erp_size)
    tiled = tiler(erp.unsqueeze(0))
    views = tiled.views[0]  # [V,3,s,s]
    n_views = int(views.shape[0])
    cols = min(n_views, 5)
    rows = math.ceil(n_views / cols)
    fig = plt.figure(figsize=(2.4 * cols, 2.9 + 2.5 * rows + 1.2), dpi=dpi)
    grid = fig.add_gridspec(rows + 2, cols, height_ratios=[2.6] + [2.3] * rows + [1.3])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(erp.permute(1, 2, 0).numpy(), extent=(-180, 180, -90, 90), aspect="auto")
    ax.set_xticks([-180, -90, 0, 90, 180], ["behind", "left", "front", "right", "behind"])
    ax.set_yticks([-90, 0, 90], ["-90", "horizon", "90"])
    ax.set_title(f"{sample.id}: {Path(sample.image_path).name}", fontsize=10)
    for i in range(n_views):
        a = fig.add_subplot(grid[1 + i // cols, i % cols])
        a.imshow(views[i].permute(1, 2, 0).clamp(0, 1).numpy())
        a.set_title(f"{i}: {_view_title(tiled.layout, i)}", fontsize=8)
        a.axis("off")
    text_ax = fig.add_subplot(grid[rows + 1, :])
    text_ax.axis("off")
    lines = [f"Q: {sample.query}"] + [f"  ref {k + 1}: {r}" for k, r in enumerate(sample.references)]
    wrapped = "\n".join(textwrap.shorten(line, 140) for line in lines)
    text_ax.text(0.0, 1.0, wrapped, va="top", ha="left", family="monospace", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
