"""Stitchers: token counts, the seed's stride-views gather, each direction once, grid checks."""

from __future__ import annotations

import pytest
import torch

import cora_kit
from cora_kit.geometry import patch_dirs


@pytest.fixture(scope="module")
def layout():
    return cora_kit.create("tiler", "e2p").layout


def coded_features(layout, grid=(16, 16)) -> torch.Tensor:
    """``[2, V, P, 3]`` whose token (v, p) holds (v, row, col)."""
    v, p = layout.num_views, grid[0] * grid[1]
    view = torch.arange(v).repeat_interleave(p).reshape(v, p)
    flat = torch.arange(p).repeat(v).reshape(v, p)
    feats = torch.stack([view, flat // grid[1], flat % grid[1]], -1).float()
    return feats.unsqueeze(0).repeat(2, 1, 1, 1)


@pytest.mark.parametrize("name,count", [("stride-views", 1408), ("concat", 2304), ("nearest-view", 1024)])
def test_token_counts_and_gather(layout, name, count):
    stitcher = cora_kit.create("stitcher", name)
    out = stitcher(coded_features(layout), layout, (16, 16))
    pos = out.positions
    assert out.tokens.shape == (2, count, 3) and len(pos) == count
    want = torch.stack([pos.view, pos.row, pos.col], -1).float()
    assert torch.equal(out.tokens[0], want) and torch.equal(out.tokens[1], want)
    assert pos.lon.shape == pos.lat.shape == (count,)
    assert bool((pos.view[-256:] == 0).all())  # the global view comes last (seed order)


def test_stride_views_is_the_seed_panorama(layout):
    pos = cora_kit.create("stitcher", "stride-views").select(layout, (16, 16))
    view = pos.view[:1152].reshape(16, 72)
    col = pos.col[:1152].reshape(16, 72)
    assert torch.equal(view[0, :16], torch.full((16,), 1)) and torch.equal(col[0, :16], torch.arange(16))
    for t in range(1, 8):
        assert torch.equal(view[0, 16 + 8 * (t - 1): 16 + 8 * t], torch.full((8,), t + 1))
        assert torch.equal(col[0, 16 + 8 * (t - 1): 16 + 8 * t], torch.arange(8, 16))
    assert torch.equal(pos.row[:1152].reshape(16, 72), torch.arange(16)[:, None].expand(16, 72))
    lon = pos.lon[:1152].reshape(16, 72)[8]
    steps = torch.remainder(lon[1:] - lon[:-1], 2 * torch.pi)
    assert bool((steps > 0).all()) and bool((steps < 0.2).all())  # left to right, across the seam


def test_nearest_view_represents_each_direction_once(layout):
    near = cora_kit.create("stitcher", "nearest-view", include_global=False).select(layout, (16, 16))
    allv = cora_kit.create("stitcher", "concat", include_global=False).select(layout, (16, 16))
    dirs = patch_dirs(layout, (16, 16))

    def min_cross_view_angle(pos):
        d = dirs[pos.view, pos.row * 16 + pos.col]
        cos = d @ d.T
        cos[pos.view[:, None] == pos.view[None, :]] = -1
        return float(torch.arccos(cos.max().clamp(max=1.0)))

    assert len(near) == 768 and min_cross_view_angle(allv) < 0.02  # concat: duplicates
    assert min_cross_view_angle(near) > 0.03  # nearest-view: no direction twice
    ang_own = torch.arccos(dirs[near.view, near.row * 16 + near.col][:, 2].clamp(-1, 1))
    # every kept token of tile yaw 0 lies within 22.5 deg (half the stride) of its axis in yaw
    kept0 = near.view == 1
    assert bool((near.lon[kept0].abs() < torch.deg2rad(torch.tensor(22.5))).all()) and len(ang_own) == 768


def test_other_layouts_and_grids(layout):
    cube = cora_kit.create("tiler", "cubemap").layout
    assert len(cora_kit.create("stitcher", "nearest-view").select(cube, (16, 16))) == 7 * 256
    with pytest.raises(ValueError, match="one ring of perspective tiles"):
        cora_kit.create("stitcher", "stride-views").select(cube, (16, 16))
    sv = cora_kit.create("stitcher", "stride-views")
    assert len(sv.select(layout, (8, 8))) == 8 * (8 + 7 * 4) + 64  # a pooled 8x8 grid works
    with pytest.raises(ValueError, match="not an integer"):
        sv.select(layout, (16, 15))
    assert len(cora_kit.create("stitcher", "stride-views", keep_cols=4).select(layout, (16, 16))) == 16 * 44 + 256


def test_shape_errors(layout):
    stitcher = cora_kit.create("stitcher", "concat")
    with pytest.raises(ValueError, match=r"\[B,9,P,D\]"):
        stitcher(torch.zeros(1, 8, 256, 4), layout, (16, 16))
    with pytest.raises(ValueError, match="P = 16\\*16"):
        stitcher(torch.zeros(1, 9, 64, 4), layout, (16, 16))


def test_a_meta_device_build_does_not_poison_the_geometry_cache():
    import cora_kit

    stitcher = cora_kit.create("stitcher", "stride-views")
    layout = cora_kit.create("tiler", "e2p").layout
    with torch.device("meta"):
        stitcher.select(layout, (16, 16))
    pos = stitcher.select(layout, (16, 16))
    assert pos.lon.device.type == "cpu" and torch.isfinite(pos.lon).all()
