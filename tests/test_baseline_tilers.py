"""Baseline tilers ``erp-grid`` / ``erp-global`` (issue 13 item 1): crop geometry, pixels
against plain crop + resize of the ERP, seam wrap, correspondences, stitchers, PE, params.

The ``cora_kit.testing`` conformance checks run for both in tests/test_testing_kit.py
(parametrized over every registered plugin)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cora_kit
from cora_kit.errors import PluginParamsError
from cora_kit.geometry import dirs_to_lonlat, erp_pixel_coords, grid_to_dirs, overlap_correspondences, patch_lonlat
from cora_kit.models.positional import panorama_pe


def smooth_erp(h: int, w: int) -> torch.Tensor:
    """A smooth, seam-continuous RGB ERP in [0, 1]: ``[1, 3, h, w]``."""
    y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    wave = torch.sin(2 * math.pi * 3 * xx) * torch.sin(math.pi * yy)
    base = 0.5 + 0.25 * wave + 0.2 * torch.cos(2 * math.pi * (2 * xx + yy))
    return torch.stack([base, base**2, 1 - base]).clamp(0, 1).to(torch.float32)[None]


def crop_lon_cols(yaw: float, fov: float, w: int) -> tuple[int, int]:
    """First ERP column of the crop (may be negative: wraps) and its width in columns."""
    start = (yaw - fov / 2 + 180.0) / 360.0 * w
    width = fov / 360.0 * w
    assert start == int(start) and width == int(width)
    return int(start), int(width)


def erp_rect(erp: torch.Tensor, x0: int, width: int, y0: int, height: int, margin: int = 0) -> torch.Tensor:
    """ERP columns ``[x0 - margin, x0 + width + margin)`` (wrapping at the seam), rows ``[y0, y0+height)``."""
    cols = torch.arange(x0 - margin, x0 + width + margin) % erp.shape[-1]
    return erp[..., y0 : y0 + height, :][..., cols]


# --- registration and params -------------------------------------------------------


def test_registered_with_defaults_like_e2p():
    infos = {p.name: p for p in cora_kit.list_plugins("tiler")}
    assert {"erp-grid", "erp-global", "e2p"} <= set(infos)
    grid, e2p, glob = (cora_kit.create("tiler", n) for n in ("erp-grid", "e2p", "erp-global"))
    assert grid.layout.num_views == e2p.layout.num_views == 9  # same views as e2p
    assert [v.yaw_deg for v in grid.layout.views[1:]] == [v.yaw_deg for v in e2p.layout.views[1:]]
    assert all(v.projection == "erp-crop" and (v.fov_deg, v.vfov) == (90, 180) for v in grid.layout.views[1:])
    assert grid.layout.views[0] == e2p.layout.views[0]  # the same global view
    (only,) = glob.layout.views
    assert only.projection == "erp" and not only.is_global and glob.layout.tile_indices == [0]
    out = glob(torch.rand(2, 3, 64, 128))
    assert out.views.shape == (2, 1, 3, 256, 256) and out.layout.name == "erp-global"


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("erp-grid", {"vfov_deg": 200}, "vfov_deg"),
        ("erp-grid", {"pitch_deg": 30}, r"latitude \[-60, 120\]"),  # full-height crop tilted off the sphere
        ("erp-grid", {"fov_deg": 0}, "fov_deg"),
        ("erp-grid", {"num_tiles": 0}, "num_tiles"),
        ("erp-global", {"include_global": False}, "include_global"),  # one view: nothing to exclude
        ("erp-global", {"size": 0}, "size"),
        ("erp-global", {"global_resize": "nearest"}, "global_resize"),
    ],
)
def test_params_validation(name, params, match):
    with pytest.raises(PluginParamsError, match=match):
        cora_kit.create("tiler", name, **params)


def test_limited_latitude_options():
    tiler = cora_kit.create("tiler", "erp-grid", size=32, num_tiles=4, vfov_deg=90, pitch_deg=10, include_global=False)
    assert tiler.layout.num_views == 4 and [v.yaw_deg for v in tiler.layout.views] == [0, 90, 180, 270]
    assert tiler(torch.rand(1, 3, 64, 128)).views.shape == (1, 4, 3, 32, 32)
    from cora_kit_builtins.tilers.erp_baselines import ERPGridTiler  # direct construction checks too

    with pytest.raises(ValueError, match="vfov_deg=0"):
        ERPGridTiler(vfov_deg=0)
    with pytest.raises(ValueError, match=r"latitude \[-100, 80\]"):
        ERPGridTiler(vfov_deg=180, pitch_deg=-10)


# --- geometry ----------------------------------------------------------------------


@pytest.mark.parametrize("vfov,pitch", [(180.0, 0.0), (90.0, 20.0)])
def test_crop_pixel_lonlat_is_linear(vfov, pitch):
    """Pixel (r, c) of the crop at yaw: lon = yaw - fov/2 + (c + .5) fov/s, lat = pitch + vfov/2 - (r + .5) vfov/s."""
    s = 64
    layout = cora_kit.create("tiler", "erp-grid", size=s, vfov_deg=vfov, pitch_deg=pitch).layout
    r, c = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    for view in layout.views[1:]:
        lon, lat = dirs_to_lonlat(grid_to_dirs(view, torch.stack([r, c], -1), (s, s)))
        want_lon = math.radians(view.yaw_deg - 45) + (c + 0.5) * math.radians(90) / s
        want_lat = math.radians(pitch + vfov / 2) - (r + 0.5) * math.radians(vfov) / s
        dlon = torch.remainder(lon - want_lon + math.pi, 2 * math.pi) - math.pi
        assert float(dlon.abs().max()) < 1e-9 and float((lat - want_lat).abs().max()) < 1e-9
    # the 16x16 patch grid: same law with s = 16
    plon, plat = patch_lonlat(layout, (16, 16))
    want_rows = torch.deg2rad(pitch + vfov / 2 - (torch.arange(16) + 0.5) * vfov / 16).double()
    assert torch.allclose(plat[3, :, 5], want_rows)
    assert math.isclose(float(plon[3, 7, 0]), math.radians(90 - 45 + 0.5 * 90 / 16), abs_tol=1e-12)


def test_crop_erp_pixel_coords_are_a_shifted_grid():
    """With ERP width 4s and height 2s, crop pixel (r, c) samples ERP pixel (x0 + c, 2r + 0.5)."""
    s, h, w = 32, 64, 128
    layout = cora_kit.create("tiler", "erp-grid", size=s).layout
    for view in layout.views[1:]:
        x0, _ = crop_lon_cols(view.yaw_deg, 90.0, w)
        xy = erp_pixel_coords(view, (h, w))
        c = torch.arange(s, dtype=torch.float64)
        assert torch.allclose(xy[..., 0], ((x0 + c) % w).expand(s, s), atol=1e-9)
        assert torch.allclose(xy[..., 1], (2 * c + 0.5)[:, None].expand(s, s), atol=1e-9)


# --- pixels --------------------------------------------------------------------------


def test_views_equal_resized_erp_rectangles():
    """Columns 1:1, rows halved: each crop is ``F.interpolate(bilinear)`` of its ERP rectangle."""
    s, h, w = 64, 128, 256
    erp = smooth_erp(h, w)
    views = cora_kit.create("tiler", "erp-grid", size=s)(erp).views[0]
    for i in range(1, 9):  # includes yaw 180 (crop across the seam)
        x0, width = crop_lon_cols(45.0 * (i - 1), 90.0, w)
        ref = F.interpolate(erp_rect(erp, x0, width, 0, h), size=(s, s), mode="bilinear", align_corners=False)
        assert torch.allclose(views[i], ref[0], atol=1e-5), (i, float((views[i] - ref[0]).abs().max()))
    glob = F.avg_pool2d(erp, kernel_size=(h // s, w // s))  # the global view: box filter, as in e2p
    assert torch.allclose(views[0], glob[0], atol=1e-6)
    assert torch.equal(cora_kit.create("tiler", "erp-global", size=s)(erp).views[0, 0], views[0])


def test_upsampled_crops_match_interpolation_with_context():
    """Columns doubled: the border columns blend with the ERP pixel just outside the crop
    (bilinear with context, wrapping at the seam), i.e. interpolate a 1-pixel-wider crop."""
    s, h, w = 64, 64, 128
    erp = smooth_erp(h, w)
    views = cora_kit.create("tiler", "erp-grid", size=s)(erp).views[0]
    for i in range(1, 9):
        x0, width = crop_lon_cols(45.0 * (i - 1), 90.0, w)
        wide = erp_rect(erp, x0, width, 0, h, margin=1)
        scale = s // width
        ref = F.interpolate(wide, size=(s, s + 2 * scale), mode="bilinear", align_corners=False)[..., scale:-scale]
        assert torch.allclose(views[i], ref[0], atol=1e-5), (i, float((views[i] - ref[0]).abs().max()))


def test_seam_crop_equals_the_rolled_erp():
    """The crop at yaw 180 (lon 135..-135 across the seam) = crop at yaw 0 of the half-rolled ERP."""
    h, w = 64, 128
    erp = torch.rand(1, 3, h, w)
    tiler = cora_kit.create("tiler", "erp-grid", size=48)
    a = tiler(erp).views[0, 5]
    b = tiler(torch.roll(erp, shifts=w // 2, dims=-1)).views[0, 1]
    assert tiler.layout.views[5].yaw_deg == 180 and torch.allclose(a, b, atol=1e-5)  # float32 grid rounding


def test_neighbouring_crops_share_pixels():
    """Crop i's right half is crop i+1's left half, pixel for pixel (7 -> 0 wraps)."""
    s, h, w = 32, 64, 128
    views = cora_kit.create("tiler", "erp-grid", size=s)(torch.rand(1, 3, h, w)).views[0]
    for i in range(1, 9):
        j = 1 + i % 8
        assert torch.equal(views[i][..., s // 2 :], views[j][..., : s // 2])


# --- correspondences, losses, stitchers, PE ----------------------------------------


def test_correspondences_between_neighbouring_crops():
    layout = cora_kit.create("tiler", "erp-grid").layout
    corr = overlap_correspondences(layout, (16, 16))
    assert corr.view_indices == list(range(1, 9)) and corr.layout_name == "erp-grid"
    got = {(p.src, p.dst) for p in corr.pairs}
    assert got == {(a, 1 + (a - 1 + d) % 8) for a in range(1, 9) for d in (1, -1)}  # neighbours only
    for p in corr.pairs:
        rows, cols = p.src_index // 16, p.src_index % 16
        shift = 8 if p.dst == 1 + p.src % 8 else -8  # to the right neighbour: col - 8
        assert len(p.src_index) == 128  # half the crop, every row
        assert torch.allclose(p.dst_rowcol, torch.stack([rows, cols - shift], 1).float(), atol=1e-5)
    with pytest.raises(ValueError, match="seed-strip pairs perspective tiles; layout 'erp-grid'"):
        overlap_correspondences(layout, (16, 16), mode="seed-strip")


def test_erp_global_has_no_overlap_and_losses_say_so():
    layout = cora_kit.create("tiler", "erp-global").layout
    corr = overlap_correspondences(layout, (16, 16))
    assert corr.pairs == [] and corr.view_indices == [0]
    feats = torch.randn(2, 1, 256, 8, requires_grad=True)
    for name, extra in (("vicreg", {}), ("densecl", {}), ("infonce", {"second_view": feats})):
        with pytest.raises(ValueError, match="tiler layout 'erp-global' has no overlapping views.*loss 'none'"):
            cora_kit.create("loss", name)(feats, corr, (16, 16), **extra)
    zero, logs = cora_kit.create("loss", "none")(feats, corr, (16, 16))
    assert float(zero.detach()) == 0.0 and logs == {}


def test_stitchers_on_erp_grid():
    layout = cora_kit.create("tiler", "erp-grid").layout
    make = lambda name: cora_kit.create("stitcher", name)  # noqa: E731
    pos = make("stride-views").select(layout, (16, 16))
    assert len(pos) == 16 * 72 + 256  # same token count as e2p
    pano_lon = torch.rad2deg(pos.lon[: 16 * 72].double().reshape(16, 72))
    want = -45 + (torch.arange(72, dtype=torch.float64) + 0.5) * 90 / 16  # uniform, no column twice
    err = torch.remainder(pano_lon - want[None] + 180, 360) - 180
    assert float(err.abs().max()) < 1e-4
    near = make("nearest-view").select(layout, (16, 16))
    assert len(near) == 8 * 128 + 256  # each crop keeps its central 8 columns
    kept_cols = near.col[near.view > 0]
    assert int(kept_cols.min()) == 4 and int(kept_cols.max()) == 11
    assert len(make("concat").select(layout, (16, 16))) == 9 * 256


def test_stitchers_on_erp_global():
    layout = cora_kit.create("tiler", "erp-global").layout
    feats = torch.randn(2, 1, 256, 8)
    for name in ("concat", "nearest-view"):
        for include_global in (True, False):  # the only view is always handed on
            out = cora_kit.create("stitcher", name, include_global=include_global)(feats, layout, (16, 16))
            assert torch.equal(out.tokens, feats[:, 0])
    with pytest.raises(ValueError, match="stride-views expects one ring.*'erp-global'.*'nearest-view' or 'concat'"):
        cora_kit.create("stitcher", "stride-views").select(layout, (16, 16))


@pytest.mark.parametrize("kind", ["seed-yaw", "spherical"])
def test_panorama_pe_equal_where_crops_overlap(kind):
    layout = cora_kit.create("tiler", "erp-grid").layout
    pos = cora_kit.create("stitcher", "concat").select(layout, (16, 16))
    pe = panorama_pe(kind, pos, layout, (16, 16), 64)
    idx = {(int(v), int(r), int(c)): k for k, (v, r, c) in enumerate(zip(pos.view, pos.row, pos.col))}
    for i in range(1, 9):
        j = 1 + i % 8
        for r, c in ((0, 8), (7, 12), (15, 15)):
            a, b = pe[idx[(i, r, c)]], pe[idx[(j, r, c - 8)]]
            assert torch.allclose(a, b, atol=1e-5), (kind, i, r, c)
    glob = cora_kit.create("tiler", "erp-global").layout
    gpos = cora_kit.create("stitcher", "concat").select(glob, (16, 16))
    assert panorama_pe(kind, gpos, glob, (16, 16), 64).shape == (256, 64)
