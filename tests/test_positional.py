"""Panorama PE: equal rays -> equal PE (spherical), overlapping columns -> equal PE (seed-yaw)."""

from __future__ import annotations

import math

import pytest
import torch

import cora_kit
from cora_kit import geometry
from cora_kit.interfaces import TokenPositions
from cora_kit.models.positional import PanoramaPE, panorama_pe, spherical_pe


@pytest.fixture(scope="module")
def layout():
    return cora_kit.create("tiler", "e2p").layout


def test_spherical_equal_rays_equal_pe():
    lon = torch.tensor([math.pi, -math.pi, 0.3, 0.3 + 2 * math.pi, 0.0, 2.0])
    lat = torch.tensor([0.2, 0.2, -0.4, -0.4, math.pi / 2, math.pi / 2])  # seam, wrap, pole
    pe = spherical_pe(lon, lat, 64)
    assert pe.shape == (6, 64)
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert torch.allclose(pe[a], pe[b], atol=1e-5)
    assert not torch.allclose(pe[0], pe[2], atol=1e-2)


def test_spherical_pe_of_corresponding_tokens(layout):
    """Tokens of adjacent tiles that see nearly the same direction get nearly the same PE."""
    concat = cora_kit.create("stitcher", "concat").select(layout, (16, 16))
    pe = panorama_pe("spherical", concat, layout, (16, 16), 256)
    corr = geometry.overlap_correspondences(layout, (16, 16))
    pair = next(p for p in corr.pairs if (p.src, p.dst) == (1, 2))
    dst_flat = pair.dst_rowcol.round().long()
    near = ((pair.dst_rowcol - pair.dst_rowcol.round()).abs().max(1).values < 0.1)
    assert near.sum() > 3
    a = pe[(pair.src - 1) * 256 + pair.src_index[near]]  # concat: tiles first, in layout order
    b = pe[(pair.dst - 1) * 256 + dst_flat[near, 0] * 16 + dst_flat[near, 1]]
    far = pe[0], pe[4 * 256]
    assert float(torch.cosine_similarity(a, b).min()) > 0.9
    assert float(torch.cosine_similarity(*far, dim=0)) < 0.5


def test_seed_yaw_overlapping_columns_identical(layout):
    concat = cora_kit.create("stitcher", "concat").select(layout, (16, 16))
    assert concat.view.reshape(9, 256)[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0]
    pe = panorama_pe("seed-yaw", concat, layout, (16, 16), 128).reshape(9, 16, 16, 128)
    for t in range(8):  # tile 7 wraps onto tile 0
        assert torch.allclose(pe[t, :, 8:], pe[(t + 1) % 8, :, :8], atol=1e-5)
    assert not torch.allclose(pe[0, :, :8], pe[0, :, 8:], atol=1e-2)
    assert torch.isfinite(pe).all()


def test_errors_and_module(layout):
    pos = cora_kit.create("stitcher", "stride-views").select(layout, (16, 16))
    with pytest.raises(ValueError, match="unknown panorama PE"):
        panorama_pe("rope", pos, layout, (16, 16), 64)
    with pytest.raises(ValueError, match="divisible by 4"):
        panorama_pe("seed-yaw", pos, layout, (16, 16), 66)
    module = PanoramaPE("spherical", 32)
    x = torch.zeros(2, len(pos), 32)
    out = module(x, pos, layout, (16, 16))
    assert torch.equal(out[0], panorama_pe("spherical", pos, layout, (16, 16), 32))
    with pytest.raises(ValueError, match=r"\[B,1408,32\]"):
        module(torch.zeros(2, 10, 32), pos, layout, (16, 16))
    empty = TokenPositions(*(torch.zeros(0) for _ in range(2)), *(torch.zeros(0, dtype=torch.long) for _ in range(3)))
    assert panorama_pe("spherical", empty, layout, (16, 16), 8).shape == (0, 8)


def test_pe_scale_multiplies_the_added_encoding(layout):
    pos = cora_kit.create("stitcher", "stride-views").select(layout, (4, 4))
    x = torch.randn(2, len(pos), 16)
    pe = panorama_pe("seed-yaw", pos, layout, (4, 4), 16)
    assert torch.allclose(PanoramaPE("seed-yaw", 16, scale=0.25)(x, pos, layout, (4, 4)), x + 0.25 * pe)
    assert torch.equal(PanoramaPE("seed-yaw", 16, scale=0.0)(x, pos, layout, (4, 4)), x)


def test_projector_pe_scale_comes_from_the_config():
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel

    model = CoraModel.from_config(resolve_config("tiny", None, ["model.projector.pe_scale=0.5"]))
    assert model.projector.pe.scale == 0.5
    with pytest.raises(Exception, match="pe_scale"):
        resolve_config("tiny", None, ["model.projector.pe_scale=-1"])


def test_projector_out_scale_multiplies_the_projected_tokens(layout):
    from cora_kit.models.projector import PanoramaProjector

    stitcher = cora_kit.create("stitcher", "stride-views")
    torch.manual_seed(0)
    plain = PanoramaProjector(16, 24, stitcher, layout, (4, 4))
    scaled = PanoramaProjector(16, 24, stitcher, layout, (4, 4), out_scale=0.2)
    scaled.load_state_dict(plain.state_dict())
    latent = torch.randn(2, layout.num_views, 16, 16)
    want = plain(latent).tokens
    assert torch.allclose(scaled(latent).tokens, 0.2 * want, atol=1e-6)
    assert not torch.allclose(want, 0.2 * want)


def test_projector_out_scale_comes_from_the_config():
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel

    assert CoraModel.from_config(resolve_config("tiny", None, [])).projector.out_scale == 1.0
    model = CoraModel.from_config(resolve_config("tiny", None, ["model.projector.out_scale=0.2"]))
    assert model.projector.out_scale == 0.2
    with pytest.raises(Exception, match="out_scale"):
        resolve_config("tiny", None, ["model.projector.out_scale=0"])
