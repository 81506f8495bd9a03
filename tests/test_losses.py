"""Overlap losses: registry, peer agreement with lightly, hand-checked formulas, guards."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cora_kit
from cora_kit import geometry
from cora_kit.errors import PluginParamsError
from cora_kit.geometry import Correspondences, OverlapPair
from cora_kit.models.overlap_head import OverlapHead
from cora_kit.overlap import group_by_pair, matched_features, pair_sizes
from overlap_cases import seed_strip

GRID = (16, 16)
BUILTIN_LOSSES = ("vicreg", "infonce", "densecl", "none")


@pytest.fixture(scope="module")
def lightly():
    try:
        from lightly_peer import load_lightly_losses

        return load_lightly_losses()
    except ModuleNotFoundError as exc:
        pytest.skip(f"peer tests need lightly: {exc}")


@pytest.fixture(scope="module")
def corr() -> Correspondences:
    return seed_strip()


@pytest.fixture(scope="module")
def geometric() -> Correspondences:
    if not hasattr(geometry, "overlap_correspondences"):
        pytest.skip("geometry.overlap_correspondences not available yet")
    layout = cora_kit.create("tiler", "e2p").layout
    return geometry.overlap_correspondences(layout, GRID, mode="geometric")


def _features(seed: int = 0, b: int = 3, d: int = 16, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 8, 256, d, generator=g, dtype=dtype)


def _call(loss, feats, corr, second=None):
    if getattr(loss, "two_views", False) and loss.tile_weight > 0:
        return loss(feats, corr, GRID, second_view=feats if second is None else second)
    return loss(feats, corr, GRID)


# --- registry -------------------------------------------------------------------


def test_builtin_losses_are_registered_with_status_ok():
    infos = {i.name: i for i in cora_kit.list_plugins("loss")}
    for name in BUILTIN_LOSSES:
        assert infos[name].status == "ok" and infos[name].distribution == "cora-kit"
    assert "barlow" in infos and infos["barlow"].distribution == "cora-kit-barlow"


def test_head_dropout_follows_the_seed():
    assert cora_kit.create("loss", "vicreg").head_dropout == 0.0
    assert cora_kit.create("loss", "infonce").head_dropout == 0.1
    assert cora_kit.create("loss", "densecl").head_dropout == 0.0


def test_bad_params_are_reported():
    with pytest.raises(PluginParamsError, match="variant"):
        cora_kit.create("loss", "vicreg", variant="channelwise")
    with pytest.raises(PluginParamsError, match="unknown parameter"):
        cora_kit.create("loss", "densecl", tau=0.1)
    with pytest.raises(ValueError, match="temperature"):
        cora_kit.create("loss", "densecl", temperature=0.0)


# --- peers ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["seed-strip", "geometric"])
def test_vicreg_batchwise_equals_lightly_on_flattened_pairs(lightly, corr, geometric, which):
    c = corr if which == "seed-strip" else geometric
    feats = _features(1)
    loss, logs = cora_kit.create("loss", "vicreg", variant="batchwise")(feats, c, GRID)
    src, dst = matched_features(feats, c, GRID)
    ref = lightly.VICRegLoss()(src.reshape(-1, 16), dst.reshape(-1, 16))
    assert abs(float(loss) - float(ref)) < 1e-5
    assert set(logs) >= {"inv", "var", "cov", "feat_std", "collapse"}


def test_vicreg_pairwise_equals_lightly_per_pair_group(lightly, corr):
    feats = _features(2)
    loss, _ = cora_kit.create("loss", "vicreg", variant="pairwise")(feats, corr, GRID)
    src, dst = matched_features(feats, corr, GRID)
    groups_a, _ = group_by_pair(src, pair_sizes(corr))
    groups_b, _ = group_by_pair(dst, pair_sizes(corr))
    ref = torch.stack([lightly.VICRegLoss()(a, b) for a, b in zip(groups_a, groups_b)]).mean()
    assert abs(float(loss) - float(ref)) < 1e-5


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_densecl_batch_negatives_equal_lightly_ntxent(lightly, corr, temperature):
    feats = _features(3, b=2)
    loss, _ = cora_kit.create("loss", "densecl", temperature=temperature, negatives="batch")(feats, corr, GRID)
    src, dst = matched_features(feats, corr, GRID)
    ref = lightly.NTXentLoss(temperature=temperature)(src.reshape(-1, 16), dst.reshape(-1, 16))
    assert abs(float(loss) - float(ref)) < 1e-5


def test_densecl_pair_negatives_equal_lightly_per_group(lightly, geometric):
    feats = _features(4, b=2)
    loss, _ = cora_kit.create("loss", "densecl")(feats, geometric, GRID)
    src, dst = matched_features(feats, geometric, GRID)
    sizes = pair_sizes(geometric)
    ga, mask = group_by_pair(src, sizes)
    gb, _ = group_by_pair(dst, sizes)
    ntx = lightly.NTXentLoss(temperature=0.07)
    n = mask.sum(1) if mask is not None else torch.full((ga.shape[0],), ga.shape[1])
    per = torch.stack([ntx(a[: int(k)], b[: int(k)]) for a, b, k in zip(ga, gb, n)])
    ref = (per * n).sum() / n.sum()  # mean over all anchors
    assert abs(float(loss) - float(ref)) < 1e-5


def test_infonce_overlap_term_pairs_two_dropout_views(lightly, corr):
    z1, z2 = _features(5, b=2), _features(6, b=2)
    loss, logs = cora_kit.create("loss", "infonce", tile_weight=0.0)(z1, corr, GRID, second_view=z2)
    src, _ = matched_features(z1, corr, GRID)
    _, dst = matched_features(z2, corr, GRID)
    ntx = lightly.NTXentLoss(temperature=0.07)
    ref = torch.stack([ntx(a, b) for a, b in zip(src.reshape(-1, 64, 16), dst.reshape(-1, 64, 16))]).mean()
    assert abs(float(loss) - float(ref)) < 1e-5
    assert "tile" not in logs


def test_barlow_equals_lightly(lightly, corr):
    feats = _features(7)
    loss, _ = cora_kit.create("loss", "barlow")(feats, corr, GRID)
    src, dst = matched_features(feats, corr, GRID)
    ref = lightly.BarlowTwinsLoss()(src.reshape(-1, 16).float(), dst.reshape(-1, 16).float())
    assert abs(float(loss) - float(ref)) < 1e-5 * max(1.0, abs(float(ref)))


# --- formulas by hand (where cora-kit differs on purpose) -----------------------


def _tiny_unequal() -> tuple[torch.Tensor, Correspondences]:
    """2 views on a 2x3 grid, pairs of 3 and 2 matches (integer partners)."""
    feats = torch.randn(2, 2, 6, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    pairs = [
        OverlapPair(0, 1, torch.tensor([2, 5, 1]), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])),
        OverlapPair(1, 0, torch.tensor([0, 3]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])),
    ]
    return feats, Correspondences(pairs, (2, 3))


def test_vicreg_pairwise_formula_by_hand_on_unequal_pairs():
    feats, c = _tiny_unequal()
    flat = feats.reshape(2, 2 * 6, 4)
    a_idx = [[2, 5, 1], [6, 9]]
    b_idx = [[6, 9, 8], [2, 4]]
    inv = torch.cat([(flat[:, a] - flat[:, b]).pow(2).reshape(-1) for a, b in zip(a_idx, b_idx)]).mean()
    var_terms, cov_terms = [], []
    for bi in range(2):
        for a, b in zip(a_idx, b_idx):
            vs, cs = 0.0, 0.0
            for x in (flat[bi, a], flat[bi, b]):
                n = x.shape[0]
                vs += sum(max(0.0, 1 - math.sqrt(float(x[:, j].var()) + 1e-4)) for j in range(4)) / 4
                xc = x - x.mean(0)
                cov = xc.T @ xc / (n - 1)
                cs += sum(float(cov[i, j]) ** 2 for i in range(4) for j in range(4) if i != j) / 4
            var_terms.append(vs / 2)
            cov_terms.append(cs)
    expected = 25 * float(inv) + 25 * sum(var_terms) / 4 + sum(cov_terms) / 4
    loss, logs = cora_kit.create("loss", "vicreg", variant="pairwise")(feats, c, (2, 3))
    assert abs(float(loss) - expected) < 1e-9
    assert abs(logs["inv"] - float(inv)) < 1e-12


def _ntxent_by_hand(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    n, total = a.shape[0], 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(n):
            num = math.exp(float(x[i] @ y[i]) / t)
            den = sum(math.exp(float(x[i] @ y[j]) / t) for j in range(n))
            den += sum(math.exp(float(x[i] @ x[j]) / t) for j in range(n) if j != i)
            total += -math.log(num / den)
    return total / (2 * n)


def test_infonce_within_tile_term_by_hand():
    g = torch.Generator().manual_seed(9)
    z1 = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64)
    pairs = [OverlapPair(0, 1, torch.tensor([1, 3]), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))]
    c = Correspondences(pairs, (2, 2))
    loss_fn = cora_kit.create("loss", "infonce", temperature=0.1, tile_temperature=0.2, tile_weight=0.5)
    loss, logs = loss_fn(z1, c, (2, 2), second_view=z2)
    overlap = _ntxent_by_hand(z1[0, 0, [1, 3]], z2[0, 1, [0, 2]], 0.1)
    tiles = [_ntxent_by_hand(z1[0, v], z2[0, v], 0.2) for v in range(2)]
    assert abs(logs["overlap"] - overlap) < 1e-9
    assert abs(logs["tile"] - sum(tiles) / 2) < 1e-9
    assert abs(float(loss) - (overlap + 0.5 * sum(tiles) / 2)) < 1e-9


def test_infonce_tile_term_without_second_view_is_an_error(corr):
    with pytest.raises(ValueError, match="second_view"):
        cora_kit.create("loss", "infonce")(_features(), corr, GRID)


# --- guards ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [*BUILTIN_LOSSES, "barlow"])
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_input_gives_finite_loss_and_gradients(corr, name, value):
    feats = torch.full((2, 8, 256, 8), value, requires_grad=True)
    loss_fn = cora_kit.create("loss", name)
    loss, logs = _call(loss_fn, feats, corr)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    if name != "none" and name != "barlow":
        assert logs["collapse"] == 1.0


@pytest.mark.parametrize("name", ["vicreg", "infonce", "densecl", "barlow"])
def test_bfloat16_is_accumulated_in_float32(corr, name):
    feats = _features(10, b=2, d=32, dtype=torch.float32)
    loss_fn = cora_kit.create("loss", name)
    ref, _ = _call(loss_fn, feats, corr)
    low, _ = _call(loss_fn, feats.bfloat16(), corr)
    assert low.dtype == torch.float32
    assert abs(float(low) - float(ref)) < 2e-2 * max(1.0, abs(float(ref)))


def test_aligned_overlaps_lower_the_alignment_terms(corr):
    from overlap_cases import identical_overlaps

    feats = _features(11)
    aligned = identical_overlaps(feats, corr)
    for name in ("vicreg", "densecl"):
        loss_fn = cora_kit.create("loss", name)
        _, before = loss_fn(feats, corr, GRID)
        _, after = loss_fn(aligned, corr, GRID)
        key = "inv" if name == "vicreg" else "overlap_acc"
        assert (after[key] < before[key]) if name == "vicreg" else (after[key] > before[key])
    assert cora_kit.create("loss", "vicreg")(aligned, corr, GRID)[1]["inv"] == 0.0


def test_none_loss_is_zero_and_keeps_the_graph(corr):
    feats = _features(12, dtype=torch.float32).requires_grad_()
    loss, logs = cora_kit.create("loss", "none")(feats, corr, GRID)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logs == {} and feats.grad.abs().sum() == 0


# --- overlap head ---------------------------------------------------------------


def test_overlap_head_seed_shape_and_parameters():
    head = OverlapHead()
    n_params = sum(p.numel() for p in head.parameters())
    assert n_params == 2 * (1024 * 1024 + 1024) + 2 * 1024  # ~2.1M (seed: ~2M)
    assert head(torch.zeros(2, 3, 1024)).shape == (2, 3, 1024)
    small = OverlapHead(in_dim=8, hidden_dim=12, out_dim=4)
    assert small(torch.zeros(5, 8)).shape == (5, 4)
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        small(torch.zeros(5, 7))
    with pytest.raises(ValueError, match="dropout"):
        OverlapHead(dropout=1.0)


def test_overlap_head_dropout_gives_two_views_only_in_training():
    torch.manual_seed(0)
    head = OverlapHead(16, 16, 16, dropout=0.1)
    x = torch.randn(4, 10, 16)
    a, b = head.two_views(x)
    assert not torch.equal(a, b)
    head.eval()
    a, b = head.two_views(x)
    assert torch.equal(a, b)
    assert head.dropout == 0.1
