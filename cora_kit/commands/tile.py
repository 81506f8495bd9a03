"""``cora-kit tile PANO --out sheet.png``: a contact sheet of a tiler's views.

Top: the ERP with every view's footprint outlined (in the view's colour). Below: the views.
With ``--show-overlap``, patch centres of adjacent tiles that see the same direction (exact
geometric correspondences) are drawn in the same colour in both tiles.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import typer

from cora_kit.data.images import read_erp
from cora_kit.errors import CoraKitError
from cora_kit.geometry import TileLayout, ViewCamera, adjacent_matches, view_outline


def footprint(view: ViewCamera, erp_hw: tuple[int, int], spacing: str, n: int = 64) -> list[torch.Tensor]:
    """Outline of ``view`` in ERP pixel coordinates: polylines ``[K, 2]`` (x, y), split at the seam."""
    lon, lat = view_outline(view, n, spacing)
    h, w = erp_hw
    x = (lon / (2 * math.pi) + 0.5) * w - 0.5
    y = (0.5 - lat / math.pi) * h - 0.5
    pts = torch.stack([x, y], 1)
    jumps = ((x[1:] - x[:-1]).abs() > w / 2).nonzero().squeeze(1) + 1
    return [seg for seg in torch.tensor_split(pts, jumps.tolist()) if len(seg) > 1]


def render_sheet(erp: torch.Tensor, views: torch.Tensor, layout: TileLayout, out: Path, show_overlap: bool) -> None:
    """Write the contact sheet PNG. ``erp`` ``[3,H,W]`` uint8, ``views`` ``[V,3,s,s]`` float."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = layout.num_views
    cols = min(v, 5)
    rows = math.ceil(v / cols)
    colours = plt.get_cmap("tab10")
    fig = plt.figure(figsize=(3 * cols, 3 * cols / 2 + 3 * rows))
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[cols / 2] + [1] * rows)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(erp.permute(1, 2, 0).numpy())
    h, w = erp.shape[-2:]
    for i in layout.tile_indices:
        for seg in footprint(layout.views[i], (h, w), layout.ray_spacing):
            ax.plot(seg[:, 0], seg[:, 1], color=colours(i % 10), lw=1.5)
    ax.set_title(f"{layout.name}: {v} views, footprints on the ERP")
    ax.axis("off")
    axes = []
    for i in range(v):
        a = fig.add_subplot(grid[1 + i // cols, i % cols])
        a.imshow(views[i].permute(1, 2, 0).clamp(0, 1).numpy())
        cam = layout.views[i]
        a.set_title("global" if cam.is_global else f"view {i}: yaw {cam.yaw_deg:g}, pitch {cam.pitch_deg:g}",
                    color=colours(i % 10), fontsize=9)
        a.axis("off")
        axes.append(a)
    if show_overlap:
        g = (16, 16)
        for k, (src, dst, src_rc, dst_rc) in enumerate(adjacent_matches(layout, g)):
            s = layout.views[src].size
            cmap = plt.get_cmap("hsv")
            col = [cmap(j / max(len(src_rc), 1)) for j in range(len(src_rc))]
            for view_i, rc in ((src, src_rc), (dst, dst_rc)):
                px = (rc + 0.5) * s / g[0] - 0.5
                axes[view_i].scatter(px[:, 1], px[:, 0], s=6, c=col, marker="o" if k % 2 else "s")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def tile(
    pano: Path = typer.Argument(..., help="Equirectangular image (2:1)."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG contact sheet to write."),
    tiler_name: str = typer.Option(None, "--tiler", help="Tiler plugin, e.g. e2p (default) or cubemap."),
    layout: str = typer.Option(None, "--layout", hidden=True, help="Deprecated spelling of --tiler."),
    show_overlap: bool = typer.Option(False, "--show-overlap", help="Mark matching patch centres of adjacent tiles."),
) -> None:
    """Tile a panorama and write a contact sheet of the views and their footprints."""
    from cora_kit import create

    if layout is not None:
        if tiler_name is not None and tiler_name != layout:
            raise CoraKitError(f"--layout {layout} and --tiler {tiler_name} disagree; --layout is the old name of --tiler")
        typer.echo("warning: --layout is deprecated; use --tiler (the same flag as `cora-kit data show`)", err=True)
        tiler_name = layout
    erp = read_erp(pano, dtype=torch.uint8)
    tiler = create("tiler", tiler_name or "e2p")
    if not out.parent.exists():
        raise CoraKitError(f"{out}: directory {out.parent} does not exist")
    tiled = tiler(erp.unsqueeze(0))
    render_sheet(erp, tiled.views[0], tiled.layout, out, show_overlap)
    typer.echo(f"wrote {out} ({tiled.layout.num_views} views, layout {tiled.layout.name})")


def register(app: typer.Typer) -> None:
    app.command("tile")(tile)
