"""cora_kit.overlap: gathering matched features from correspondences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cora_kit import geometry
from cora_kit.geometry import Correspondences, OverlapPair
from cora_kit.overlap import group_by_pair, matched_features, pair_ids, pair_sizes
from overlap_cases import seed_strip


def _grid_sample_reference(view_feats: torch.Tensor, rowcol: torch.Tensor) -> torch.Tensor:
    """Peer: torch grid_sample (align_corners=True, border) of ``[B,P,D]`` on a (h, w) grid."""
    b, _, d = view_feats.shape
    h, w = 5, 7
    img = view_feats.reshape(b, h, w, d).permute(0, 3, 1, 2)
    x = rowcol[:, 1] / (w - 1) * 2 - 1
    y = rowcol[:, 0] / (h - 1) * 2 - 1
    g = torch.stack([x, y], dim=-1).reshape(1, 1, -1, 2).expand(b, -1, -1, -1)
    out = F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].permute(0, 2, 1)


def test_bilinear_matches_grid_sample_including_border():
    torch.manual_seed(0)
    h, w = 5, 7
    feats = torch.randn(3, 2, h * w, 4, dtype=torch.float64)
    rowcol = torch.stack([torch.rand(50) * (h + 1) - 1, torch.rand(50) * (w + 1) - 1], dim=1)
    rowcol = torch.cat([rowcol, torch.tensor([[0.0, 0.0], [h - 1, w - 1], [2.0, 6.0], [-3.0, 9.0]])])
    pair = OverlapPair(0, 1, torch.randint(0, h * w, (len(rowcol),)), rowcol)
    corr = Correspondences([pair], (h, w))
    src, dst = matched_features(feats, corr, (h, w))
    ref = _grid_sample_reference(feats[:, 1], rowcol.double())
    torch.testing.assert_close(dst, ref, atol=1e-6, rtol=0)  # weights are float32
    torch.testing.assert_close(src, feats[:, 0, pair.src_index])


def test_nearest_takes_the_closest_patch_and_integers_agree():
    torch.manual_seed(1)
    feats = torch.randn(2, 2, 16, 3)
    rowcol = torch.tensor([[0.4, 0.6], [2.6, 3.4], [1.0, 2.0], [9.0, -2.0]])
    corr = Correspondences([OverlapPair(1, 0, torch.arange(4), rowcol)], (4, 4))
    _, near = matched_features(feats, corr, (4, 4), sampling="nearest")
    expected = torch.tensor([0 * 4 + 1, 3 * 4 + 3, 1 * 4 + 2, 3 * 4 + 0])
    torch.testing.assert_close(near, feats[:, 0, expected])
    _, bil = matched_features(feats, corr, (4, 4), sampling="bilinear")
    torch.testing.assert_close(bil[:, 2], feats[:, 0, 6])  # integer position: exact patch


def test_view_indices_map_layout_views_to_feature_views():
    corr = seed_strip(num_tiles=8, offset=1)  # layout views 1..8, features hold 8 tiles
    feats = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1, 1).expand(2, 8, 256, 5).contiguous()
    src, dst = matched_features(feats, corr, (16, 16))
    assert src.shape == dst.shape == (2, 8 * 64, 5)
    sizes = pair_sizes(corr)
    ids = pair_ids(corr)
    assert sizes == (64,) * 8 and ids.tolist() == [k for k in range(8) for _ in range(64)]
    assert src[0, ids == 7, 0].eq(7).all() and dst[0, ids == 7, 0].eq(0).all()  # wrap-around


def test_low_precision_is_gathered_in_float32():
    feats = torch.randn(1, 8, 256, 4).bfloat16()
    src, dst = matched_features(feats, seed_strip(), (16, 16))
    assert src.dtype == dst.dtype == torch.float32


@pytest.mark.parametrize(
    ("features", "corr", "grid", "match"),
    [
        (torch.zeros(8, 256, 4), seed_strip(), (16, 16), r"\[B,V,P,D\]"),
        (torch.zeros(1, 8, 255, 4), seed_strip(), (16, 16), "P=255"),
        (torch.zeros(1, 8, 64, 4), seed_strip(), (8, 8), "grid"),
        (torch.zeros(1, 9, 256, 4), seed_strip(), (16, 16), "9"),
        (torch.zeros(1, 8, 256, 4), Correspondences([], (16, 16)), (16, 16), "no overlapping"),
        (
            torch.zeros(1, 8, 256, 4),
            Correspondences([OverlapPair(0, 1, torch.arange(3), torch.zeros(3, 2))], (16, 16), view_indices=list(range(1, 9))),
            (16, 16),
            "view 0",
        ),
        (
            torch.zeros(1, 2, 256, 4),
            Correspondences([OverlapPair(0, 1, torch.arange(3), torch.zeros(2, 2))], (16, 16)),
            (16, 16),
            r"\[M,2\]",
        ),
    ],
)
def test_bad_input_is_a_clear_error(features, corr, grid, match):
    with pytest.raises(ValueError, match=match):
        matched_features(features, corr, grid)


def test_bad_sampling_is_an_error():
    with pytest.raises(ValueError, match="sampling"):
        matched_features(torch.zeros(1, 8, 256, 2), seed_strip(), (16, 16), sampling="cubic")


def test_group_by_pair_pads_unequal_pairs():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    groups, mask = group_by_pair(x, (3, 2))
    assert groups.shape == (4, 3, 1)
    assert mask.tolist() == [[True, True, True], [True, True, False]] * 2
    assert groups[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 0], [5, 6, 7], [8, 9, 0]]
    same, none = group_by_pair(x[:, :4], (2, 2))
    assert none is None and same.shape == (4, 2, 1)


def _e2p_layout():
    if not hasattr(geometry, "overlap_correspondences"):
        pytest.skip("geometry.overlap_correspondences not available yet")
    import cora_kit

    return cora_kit.create("tiler", "e2p").layout


def test_geometric_partners_see_the_same_ray():
    """Features = the patch's ray direction: exact correspondences align them far
    better than the seed's strips (which pair rays ~20 degrees apart)."""
    layout = _e2p_layout()
    geo = geometry.overlap_correspondences(layout, (16, 16), mode="geometric")
    strip = geometry.overlap_correspondences(layout, (16, 16), mode="seed-strip")
    dirs = geometry.patch_dirs(layout, (16, 16))  # [V,P,3]
    feats = dirs[geo.view_indices].unsqueeze(0).float()
    src, dst = matched_features(feats, geo, (16, 16))
    cos_geo = F.cosine_similarity(src, dst, dim=-1)
    s_src, s_dst = matched_features(feats, strip, (16, 16))
    cos_strip = F.cosine_similarity(s_src, s_dst, dim=-1)
    assert cos_geo.min() > 0.995, float(cos_geo.min())
    assert cos_strip.mean() < 0.97, float(cos_strip.mean())
    assert src.shape[1] == sum(pair_sizes(geo))
