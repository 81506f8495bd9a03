"""Every built-in resampler: shapes vs declared grid, gradients, meta construction,
the seed's MLP and BiMamba structure, bidirectionality and the backend rules."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import cora_kit
from cora_kit.errors import BackendUnavailableError, PluginParamsError
from cora_kit.registry import BUILTIN_DISTRIBUTION, REGISTRY
from cora_kit_builtins.resamplers.bimamba import scan_permutation

BUILTINS = sorted(
    s.name for s in REGISTRY.specs("resampler") if s.provenance.distribution == BUILTIN_DISTRIBUTION
)

#: small configs so each forward/backward takes milliseconds
SMALL: dict[str, dict] = {
    "identity": {"in_dim": 16},
    "mlp": {"in_dim": 16, "out_dim": 12, "hidden_dim": 20},
    "bimamba": {"in_dim": 16, "out_dim": 12, "hidden_dim": 8, "num_layers": 2, "d_state": 4, "backend": "torch", "chunk": 3},
    "c-abstractor": {"in_dim": 16, "out_dim": 12, "hidden_dim": 8, "depth": 1, "pool_size": 2},
    "perceiver": {"in_dim": 16, "out_dim": 12, "hidden_dim": 8, "num_heads": 2, "num_latents": 9},
    "qformer": {"in_dim": 16, "out_dim": 12, "hidden_dim": 8, "num_heads": 2, "num_queries": 16},
    "avgpool": {"in_dim": 16, "out_dim": 12},
    "conv": {"in_dim": 16, "out_dim": 12},
    "spatial-pool": {"in_dim": 16, "out_dim": 12, "output_size": 3},
    "masked-drop": {"in_dim": 16, "out_dim": 12, "drop_ratio": 0.5},
}


def test_every_builtin_has_a_small_config():
    assert set(BUILTINS) == set(SMALL)


@pytest.mark.parametrize("name", BUILTINS)
def test_forward_matches_declared_grid_and_backprops(name):
    torch.manual_seed(0)
    model = cora_kit.create("resampler", name, **SMALL[name])
    grid = (4, 4)
    x = torch.randn(3, 16, model.in_dim, requires_grad=True)
    for train in (True, False):
        model.train(train)
        out_grid = model.output_grid(grid)
        y = model(x, grid)
        assert list(y.shape) == [3, out_grid[0] * out_grid[1], model.out_dim], (train, out_grid)
        assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert isinstance(model.backend, str) and model.backend


@pytest.mark.parametrize("name", BUILTINS)
def test_rejects_wrong_width_with_shape(name):
    model = cora_kit.create("resampler", name, **SMALL[name])
    with pytest.raises(ValueError, match=r"\[3, 16, 5\]"):
        model(torch.randn(3, 16, 5), (4, 4))


@pytest.mark.parametrize("name", BUILTINS)
def test_default_config_builds_on_meta(name):
    with torch.device("meta"):
        model = cora_kit.create("resampler", name)
    assert all(p.is_meta for p in model.parameters())


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_seed_mlp_structure_exact():
    with torch.device("meta"):
        model = cora_kit.create("resampler", "mlp")
    assert _shapes(model) == {
        "net.0.weight": (1536, 1152), "net.0.bias": (1536,),
        "net.1.weight": (1536,), "net.1.bias": (1536,),
        "net.3.weight": (1536, 1536), "net.3.bias": (1536,),
        "net.4.weight": (1536,), "net.4.bias": (1536,),
        "net.6.weight": (1024, 1536), "net.6.bias": (1024,),
    }
    assert [type(m).__name__ for m in model.net] == ["Linear", "LayerNorm", "GELU", "Linear", "LayerNorm", "GELU", "Linear"]


def test_seed_bimamba_structure_exact():
    with torch.device("meta"):
        model = cora_kit.create("resampler", "bimamba")
    mamba = {  # d_model 1024, d_inner 2048, d_state 64, d_conv 4, dt_rank 64
        "in_proj.weight": (4096, 1024),
        "conv1d.weight": (2048, 1, 4), "conv1d.bias": (2048,),
        "x_proj.weight": (64 + 2 * 64, 2048),
        "dt_proj.weight": (2048, 64), "dt_proj.bias": (2048,),
        "A_log": (2048, 64), "D": (2048,),
        "out_proj.weight": (1024, 2048),
    }
    expect = {"input_proj.weight": (1024, 1152), "input_proj.bias": (1024,)}
    for i in range(4):
        for side in ("forward_ssm", "backward_ssm"):
            expect.update({f"blocks.{i}.{side}.{k}": v for k, v in mamba.items()})
        expect.update({f"blocks.{i}.norm.weight": (1024,), f"blocks.{i}.norm.bias": (1024,)})
    expect.update({
        "final_norm.weight": (1024,), "final_norm.bias": (1024,),
        "output_proj.weight": (1024, 1024), "output_proj.bias": (1024,),
    })
    assert _shapes(model) == expect
    assert sum(p.numel() for p in model.parameters()) == 57_929_728


def test_bimamba_is_bidirectional():
    torch.manual_seed(0)
    model = cora_kit.create("resampler", "bimamba", **SMALL["bimamba"])
    x = torch.randn(1, 16, 16, requires_grad=True)
    t = 7
    model(x, (4, 4))[0, t].sum().backward()
    influence = x.grad[0].abs().sum(-1)
    assert influence[t + 1 :].min() > 0, "output at t must depend on every later input"
    assert influence[:t].min() > 0, "output at t must depend on every earlier input"


def test_single_direction_mamba_is_causal():
    model = cora_kit.create("resampler", "bimamba", **SMALL["bimamba"]).blocks[0].forward_ssm
    x = torch.randn(1, 10, 8, requires_grad=True)
    model(x)[0, 4].sum().backward()
    assert x.grad[0, 5:].abs().max() == 0 and x.grad[0, :5].abs().min() > 0


@pytest.mark.parametrize("order", ["row-major", "column-major", "snake"])
def test_scan_orders_are_permutations_and_output_is_row_major(order):
    perm = scan_permutation((3, 4), order)
    assert sorted(perm.tolist()) == list(range(12))
    torch.manual_seed(0)
    kw = {**SMALL["bimamba"], "scan_order": order}
    model = cora_kit.create("resampler", "bimamba", **kw)
    x = torch.randn(2, 12, 16)
    # the scan sees tokens in `order`: feeding a pre-permuted row-major model must agree
    torch.manual_seed(0)
    row = cora_kit.create("resampler", "bimamba", **{**kw, "scan_order": "row-major"})
    row.load_state_dict(model.state_dict())
    expect = row(x[:, perm], (3, 4))[:, torch.argsort(perm)]
    assert torch.allclose(model(x, (3, 4)), expect, atol=1e-6)


def test_scan_order_snake_and_column_values():
    assert scan_permutation((2, 3), "column-major").tolist() == [0, 3, 1, 4, 2, 5]
    assert scan_permutation((2, 3), "snake").tolist() == [0, 1, 2, 5, 4, 3]
    with pytest.raises(PluginParamsError):
        cora_kit.create("resampler", "bimamba", scan_order="diagonal")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_backend_without_cuda_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' needs a CUDA device"):
        cora_kit.create("resampler", "bimamba", **{**SMALL["bimamba"], "backend": "cuda"})


def test_backend_reported_by_registry_and_instance():
    spec = REGISTRY.lookup("resampler", "bimamba")
    label = spec.resolve_backend()
    model = cora_kit.create("resampler", "bimamba", **{**SMALL["bimamba"], "backend": "auto"})
    if not torch.cuda.is_available():
        assert label.startswith("torch scan (")
        assert model.backend.startswith("torch scan")
    model(torch.randn(1, 4, 16), (2, 2))
    assert model.backend == "torch scan"  # CPU tensors always run the torch scan


def test_masked_drop_masks_in_training_and_keeps_the_grid():
    model = cora_kit.create("resampler", "masked-drop", **SMALL["masked-drop"])
    x = torch.randn(2, 16, 16)
    model.train()
    y = model(x, (4, 4))
    assert y.shape == (2, 16, 12) and model.output_grid((4, 4)) == (4, 4)
    kept = model.kept_indices
    assert kept.shape == (2, 8) and (kept.diff(dim=1) > 0).all()
    full = model.proj(x)
    for b in range(2):
        dropped = sorted(set(range(16)) - set(kept[b].tolist()))
        assert torch.allclose(y[b, kept[b]], full[b, kept[b]])  # kept tokens: the projection
        assert torch.equal(y[b, dropped], model.mask_token.expand(len(dropped), -1))  # dropped: [MASK]
    y.sum().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    model.eval()
    z = model(x, (4, 4))
    assert z.shape == (2, 16, 12) and model.kept_indices is None
    assert torch.allclose(z, model.proj(x))


def test_pooling_grids():
    assert cora_kit.create("resampler", "avgpool").output_grid((16, 16)) == (8, 8)
    assert cora_kit.create("resampler", "conv", in_dim=8, out_dim=8, stride=4).output_grid((16, 16)) == (4, 4)
    with pytest.raises(ValueError, match="divisible by 2"):
        cora_kit.create("resampler", "avgpool", in_dim=4, out_dim=4)(torch.randn(1, 15, 4), (3, 5))
    x = torch.randn(1, 16, 4)
    pooled = cora_kit.create("resampler", "avgpool", in_dim=4, out_dim=4)
    ref = torch.nn.functional.avg_pool2d(x.transpose(1, 2).reshape(1, 4, 4, 4), 2).flatten(2).transpose(1, 2)
    assert torch.allclose(pooled(x, (4, 4)), pooled.proj(ref), atol=1e-6)


def test_default_query_resamplers_keep_the_seed_grid():
    for name in ("perceiver", "qformer"):
        assert cora_kit.create("resampler", name, in_dim=8, out_dim=8, hidden_dim=8, num_heads=2).output_grid((16, 16)) == (16, 16)


def test_plugins_command_lists_counts_and_backend():
    from cora_kit.cli import app

    result = CliRunner().invoke(app, ["plugins", "--kind", "resampler", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["bimamba"]["num_params"] == 57_929_728
    assert rows["mlp"]["num_params"] == 5_711_872
    assert rows["bimamba"]["backend"].startswith(("torch scan", "mamba-ssm CUDA"))
    for name in BUILTINS:
        assert rows[name]["num_params"] is not None, name
