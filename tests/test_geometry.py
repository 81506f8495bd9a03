"""Sphere geometry: cameras vs py360convert, exact overlap correspondences, seed-strip parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cora_kit
from cora_kit import geometry as geo
from cora_kit.errors import DataError
from cora_kit.geometry import TileLayout, ViewCamera


@pytest.fixture(scope="module")
def layout() -> TileLayout:
    return cora_kit.create("tiler", "e2p").layout


def test_default_layout_contract(layout):
    views = layout.views
    assert len(views) == 9 and views[0].is_global and layout.global_index == 0
    assert [v.yaw_deg for v in views[1:]] == [45.0 * i for i in range(8)]
    for v in views[1:]:
        assert (v.pitch_deg, v.fov_deg, v.size, v.is_global) == (0.0, 90.0, 256, False)
    assert layout.tile_indices == list(range(1, 9))


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (45, 0), (135, 20), (-100, 60), (30, -60), (180, 90), (0, -90)])
def test_rays_match_py360convert(yaw, pitch):
    xyzpers = pytest.importorskip("py360convert.utils").xyzpers
    view = ViewCamera(yaw, pitch, 90.0, 16)
    dirs = geo.grid_to_dirs(view, geo._centres((16, 16)), (16, 16), "py360convert")
    ref = xyzpers(math.pi / 2, math.pi / 2, -math.radians(yaw), math.radians(pitch), (16, 16), 0).reshape(-1, 3)
    ref = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    assert np.abs(dirs.numpy() - ref).max() < 1e-6


def test_true_centres_vs_py360convert_spacing():
    """Documented difference: true pixel centres vs edge-to-edge linspace, 256 px, FOV 90."""
    view = ViewCamera(0.0, 0.0, 90.0, 256)
    c = geo._centres((256, 256))
    a = geo.grid_to_dirs(view, c, (256, 256), "centres")
    b = geo.grid_to_dirs(view, c, (256, 256), "py360convert")
    ang = torch.linalg.cross(a, b).norm(dim=-1).asin()  # measured: max 2.0e-3 rad, mean 1.7e-3
    assert 1.5e-3 < float(ang.max()) < 2.5e-3 and float(ang.mean()) < float(ang.max())


def test_roundtrip_dirs_grid():
    for view in (ViewCamera(300, 30, 70, 64), ViewCamera(0, 0, 360, 64, True, "erp", 180.0),
                 ViewCamera(-45, -20, 90, 64, projection="erp-crop", vfov_deg=60)):
        rc = torch.rand(50, 2, dtype=torch.float64) * 15
        back, vis = geo.dirs_to_grid(view, geo.grid_to_dirs(view, rc, (16, 16)), (16, 16))
        assert vis.all() and torch.allclose(back, rc, atol=1e-9)


def test_adjacent_tiles_overlap_as_designed(layout):
    corr = geo.overlap_correspondences(layout, (16, 16))
    assert corr.view_indices == list(range(1, 9)) and corr.mode == "geometric"
    assert len(corr.pairs) == 16  # FOV 90 / stride 45: only neighbours overlap, both directions
    assert {(p.src, p.dst) for p in corr.pairs} == {
        (1 + i, 1 + (i + d) % 8) for i in range(8) for d in (1, -1)
    }
    pair = next(p for p in corr.pairs if (p.src, p.dst) == (1, 2))
    assert pair.src_index.dtype == torch.long and pair.dst_rowcol.dtype == torch.float32
    assert pair.src_index.numel() == 120  # DESIGN.md section 4
    where = {int(i): rc for i, rc in zip(pair.src_index, pair.dst_rowcol)}
    cols = [float(where[8 * 16 + c][1]) for c in range(12, 16)]
    assert cols == pytest.approx([5.26, 6.02, 6.67, 7.24], abs=0.01)  # not 0..3 as the seed assumes
    rows0 = [float(where[c][0]) for c in range(11, 16)]
    assert min(rows0) == pytest.approx(0.12, abs=0.01) and max(rows0) == pytest.approx(2.03, abs=0.01)
    assert 8 * 16 + 8 in where and 8 * 16 + 7 not in where  # left of the axis: not visible


def test_symmetric_consistency(layout):
    """a -> b -> a maps every patch centre back to itself within 1e-4 patch."""
    corr = geo.overlap_correspondences(layout, (16, 16), include_global=True)
    for p in corr.pairs:
        a, b = layout.views[p.src], layout.views[p.dst]
        dirs = geo.grid_to_dirs(b, p.dst_rowcol.double(), (16, 16), layout.ray_spacing)
        back, vis = geo.dirs_to_grid(a, dirs, (16, 16), layout.ray_spacing)
        want = torch.stack([p.src_index // 16, p.src_index % 16], 1).double()
        assert vis.all()
        err = (back - want).abs()
        if a.projection == "erp":
            err[:, 1] = torch.minimum(err[:, 1], 16 - err[:, 1])
        assert float(err.max()) < 1e-4, (p.src, p.dst)


def test_global_view_takes_part_only_if_asked(layout):
    with_g = geo.overlap_correspondences(layout, (16, 16), include_global=True)
    assert with_g.view_indices == list(range(9))
    to_global = [p for p in with_g.pairs if p.dst == 0]
    assert len(to_global) == 8 and all(p.src_index.numel() == 256 for p in to_global)
    from_global = [p for p in with_g.pairs if p.src == 0]
    assert len(from_global) == 8 and 0 < sum(p.src_index.numel() for p in from_global)


def test_seam_continuity(layout):
    """Pairs across the +-180 deg seam are the same as pairs away from it (rotation invariance)."""
    corr = {(p.src, p.dst): p for p in geo.overlap_correspondences(layout, (16, 16)).pairs}
    ref = corr[(1, 2)]
    for pair in [(5, 6), (4, 5), (8, 1)]:  # yaw 180 -> 225 straddles the seam; 315 -> 0 wraps
        assert torch.equal(corr[pair].src_index, ref.src_index)
        assert torch.allclose(corr[pair].dst_rowcol, ref.dst_rowcol, atol=1e-4)
    shifted = TileLayout(tuple(ViewCamera(22.5 + 45 * i, 0, 90, 256) for i in range(8)))
    for p in geo.overlap_correspondences(shifted, (16, 16)).pairs:
        assert torch.allclose(p.dst_rowcol, corr[(p.src + 1, p.dst + 1)].dst_rowcol, atol=1e-4)


def test_seed_strip_reproduces_seed_indices(layout):
    corr = geo.overlap_correspondences(layout, (16, 16), mode="seed-strip")
    assert [(p.src, p.dst) for p in corr.pairs] == [(1 + i, 1 + (i + 1) % 8) for i in range(8)]
    seed_right = torch.arange(256).reshape(16, 16)[:, -4:].reshape(-1)  # tile i[:, -k:]
    seed_left = torch.arange(256).reshape(16, 16)[:, :4].reshape(-1)  # tile i+1[:, :k]
    for p in corr.pairs:
        assert p.src_index.numel() == 64 and torch.equal(p.src_index, seed_right)
        dst_flat = (p.dst_rowcol[:, 0] * 16 + p.dst_rowcol[:, 1]).long()
        assert torch.equal(dst_flat, seed_left)
    k8 = geo.overlap_correspondences(layout, (16, 16), mode="seed-strip", k=8)
    assert k8.pairs[0].src_index.numel() == 128
    with pytest.raises(ValueError, match="mode"):
        geo.overlap_correspondences(layout, (16, 16), mode="nope")


def test_patch_lonlat(layout):
    lon, lat = geo.patch_lonlat(layout, (16, 16))
    assert lon.shape == (9, 16, 16)
    # global view: linear in column/row; tile at yaw 90: symmetric about lon 90 deg
    assert torch.allclose(lon[0, 0], torch.linspace(-math.pi + math.pi / 16, math.pi - math.pi / 16, 16, dtype=torch.float64))
    assert torch.allclose(lat[0, :, 0], torch.linspace(math.pi / 2 - math.pi / 32, -math.pi / 2 + math.pi / 32, 16, dtype=torch.float64))
    mid = (lon[3, 8, 7] + lon[3, 8, 8]) / 2
    assert float(mid) == pytest.approx(math.pi / 2, abs=1e-9)
    assert float(lat[3, 0, 0]) > 0 > float(lat[3, 15, 0])  # rows go downwards


def test_erp_pixel_coords_wrap():
    xy = geo.erp_pixel_coords(ViewCamera(180.0, 0, 90, 32), (64, 128))
    assert float(xy[..., 0].min()) >= -0.5 and float(xy[..., 0].max()) < 127.5
    left, right = xy[16, 15, 0], xy[16, 16, 0]  # the two columns next to the seam
    assert float(left) > 120 and float(right) < 8


def test_load_erp_errors(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 200)).save(tmp_path / "wide.png")
    with pytest.raises(DataError, match=r"wide.png: 300x200 is not an equirectangular"):
        geo.load_erp(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.png: cannot read"):
        geo.load_erp(tmp_path / "junk.png")
    with pytest.raises(DataError, match="missing.png: cannot read"):
        geo.load_erp(tmp_path / "missing.png")
    Image.new("LAB", (64, 32)).save(tmp_path / "lab.tif")
    with pytest.raises(DataError, match=r"lab.tif: 64x32 image has 3 channels \(mode LAB\)"):
        geo.load_erp(tmp_path / "lab.tif")
    Image.new("RGB", (64, 32), (200, 50, 10)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert geo.load_erp(tmp_path / "cmyk.jpg")[:, 0, 0].tolist() == [200, 50, 10]  # converted (issue 18)
    Image.new("LA", (64, 32), (200, 10)).save(tmp_path / "grey.png")
    grey = geo.load_erp(tmp_path / "grey.png")
    assert grey.shape == (3, 32, 64) and grey.dtype == torch.uint8 and int(grey[:, 0, 0].min()) == 200
