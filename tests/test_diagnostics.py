"""Stage-1 diagnostics on constructed features with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from cora_kit.eval.diagnostics import (
    CollapseThresholds,
    CollapseWarning,
    effective_rank,
    hungarian_accuracy,
    stage1_diagnostics,
)
from cora_kit.overlap import matched_features, pair_sizes
from overlap_cases import identical_overlaps, seed_strip

GRID = (16, 16)


def _random(seed: int, b: int = 2, d: int = 64) -> torch.Tensor:
    return torch.randn(b, 8, 256, d, generator=torch.Generator().manual_seed(seed))


def test_identical_overlaps_score_perfectly():
    corr = seed_strip()
    feats = identical_overlaps(_random(0), corr)
    diag = stage1_diagnostics(feats, corr, GRID, resampler_features=_random(1, d=32))
    v = diag.values
    assert v["adj_cos"] == pytest.approx(1.0, abs=1e-9)
    assert v["adj_mse"] == pytest.approx(0.0, abs=1e-12)
    assert v["overlap_ret_acc"] == 1.0 and v["hungarian_acc"] == 1.0
    assert v["feat_std"] > 0.9 and v["eff_rank"] > 40 and v["r_eff_rank"] > 20
    assert not diag.collapse and diag.reasons == []


def test_independent_random_features_retrieve_at_chance():
    corr = seed_strip()
    diag = stage1_diagnostics(_random(2, b=4), corr, GRID).values
    assert abs(diag["adj_cos"]) < 0.02
    assert diag["adj_mse"] == pytest.approx(2.0, rel=0.05)
    assert diag["overlap_ret_acc"] < 4 / 256  # chance 1/256
    assert diag["hungarian_acc"] < 5 / 64  # chance 1/64
    assert math.isnan(diag["r_eff_rank"])


def test_collapsed_features_warn_and_log(caplog):
    corr = seed_strip()
    one = torch.randn(64)
    collapsed = one.expand(2, 8, 256, 64) + 1e-6 * _random(3)
    with pytest.warns(CollapseWarning, match="collapsed"), caplog.at_level("WARNING"):
        diag = stage1_diagnostics(collapsed, corr, GRID)
    assert diag.values["feat_std"] < 1e-3
    assert diag.values["eff_rank"] == pytest.approx(1.0, abs=0.05)
    assert diag.collapse and "feat_std" in diag.reasons[-1]
    assert any("collapsed" in r.message for r in caplog.records)
    assert diag.to_dict()["collapse"] is True


def test_thresholds_are_configurable():
    corr = seed_strip()
    with pytest.warns(CollapseWarning, match="eff_rank"):
        diag = stage1_diagnostics(_random(4, d=8), corr, GRID, thresholds=CollapseThresholds(eff_rank=100.0))
    assert diag.collapse


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.ones(7, 3)) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4, 4)) == 0.0
    x = torch.diag(torch.tensor([3.0, 1.0]))  # p = (0.75, 0.25)
    assert effective_rank(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_hungarian_accuracy_sees_permuted_partners():
    corr = seed_strip()
    feats = identical_overlaps(_random(5), corr)
    src, dst = matched_features(feats, corr, GRID)
    assert hungarian_accuracy(src, dst, pair_sizes(corr)) == 1.0
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = dst.reshape(2, 8, 64, -1)[:, :, perm].reshape(dst.shape)
    expected = float((perm == torch.arange(64)).float().mean())
    assert hungarian_accuracy(src, shuffled, pair_sizes(corr)) == pytest.approx(expected)


def test_geometric_correspondences_of_a_smooth_field():
    """Features = a smooth function of the patch ray: partners agree on true correspondences."""
    from cora_kit import geometry

    if not hasattr(geometry, "overlap_correspondences"):
        pytest.skip("geometry.overlap_correspondences not available yet")
    import cora_kit

    layout = cora_kit.create("tiler", "e2p").layout
    geo = geometry.overlap_correspondences(layout, GRID, mode="geometric")
    dirs = geometry.patch_dirs(layout, GRID)[geo.view_indices].float()  # [8,256,3]
    freqs = torch.randn(3, 32, generator=torch.Generator().manual_seed(6)) * 2.0
    field = torch.cat([torch.sin(dirs @ freqs), torch.cos(dirs @ freqs)], dim=-1).unsqueeze(0)
    v = stage1_diagnostics(field, geo, GRID).values
    assert v["adj_cos"] > 0.999 and v["hungarian_acc"] > 0.95
    assert v["overlap_ret_acc"] > 0.8
    strip = geometry.overlap_correspondences(layout, GRID, mode="seed-strip")
    s = stage1_diagnostics(field, strip, GRID).values  # the seed's strips pair other rays
    assert s["adj_cos"] < 0.9 and s["overlap_ret_acc"] < 0.1


def test_no_overlap_gives_nan_with_reason_and_still_measures_collapse():
    import math

    import torch

    from cora_kit.eval.diagnostics import stage1_diagnostics
    from cora_kit.geometry import Correspondences

    feats = torch.randn(2, 1, 16, 8)
    diag = stage1_diagnostics(feats, Correspondences(pairs=[], grid_hw=(4, 4), layout_name="erp-global"), (4, 4))
    assert math.isnan(diag.values["adj_cos"]) and math.isnan(diag.values["hungarian_acc"])
    assert diag.values["feat_std"] > 0 and diag.values["eff_rank"] > 1
    assert any("erp-global has no overlapping views" in r for r in diag.reasons)
