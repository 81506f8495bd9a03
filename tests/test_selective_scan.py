"""The chunked torch selective scan against a sequential loop and against mambapy."""

from __future__ import annotations

import pytest
import torch

import cora_kit_builtins.resamplers.selective_scan as ss
from cora_kit_builtins.resamplers.mamba_block import MambaBlock
from cora_kit_builtins.resamplers.selective_scan import (
    chunked_selective_scan,
    selective_scan,
    selective_scan_reference,
)


def _inputs(b: int, L: int, d: int, n: int, dtype=torch.float64, delta_scale: float = 2.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, L, d, generator=g, dtype=dtype)
    delta = torch.rand(b, L, d, generator=g, dtype=dtype) * delta_scale
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 3 - 0.05
    B = torch.randn(b, L, n, generator=g, dtype=dtype)
    C = torch.randn(b, L, n, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C)]


def _fwd_bwd(fn, ins, gy_seed: int = 1):
    y = fn(*ins)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(gy_seed), dtype=y.dtype)
    return y, torch.autograd.grad(y, ins, gy)


@pytest.mark.parametrize(
    "b,L,d,n,chunk,tile",
    [
        (2, 13, 5, 3, 4, 1 << 19),  # L not a multiple of the chunk
        (1, 16, 7, 4, 16, 1 << 19),  # one chunk
        (3, 20, 9, 4, 3, 24),  # several channel tiles (tile width 2) and chunks
        (2, 9, 4, 2, 1, 1 << 19),  # chunk of one step
        (3, 10, 4, 2, 2, 32),  # batch groups of 2 (last group of 1)
    ],
)
def test_matches_sequential_reference_float64(monkeypatch, b, L, d, n, chunk, tile):
    monkeypatch.setattr(ss, "_TILE_ELEMS", tile)
    ins = _inputs(b, L, d, n)
    y, grads = _fwd_bwd(lambda *a: chunked_selective_scan(*a, chunk=chunk), ins)
    y_ref, grads_ref = _fwd_bwd(selective_scan_reference, ins)
    assert (y - y_ref).abs().max() < 1e-6
    for name, g, g_ref in zip("u delta A B C".split(), grads, grads_ref):
        err = (g - g_ref).abs().max().item()
        assert err < 1e-6, f"grad {name}: max abs err {err}"


def test_gradcheck_small():
    ins = _inputs(1, 6, 3, 2, delta_scale=1.0)
    assert torch.autograd.gradcheck(lambda *a: chunked_selective_scan(*a, chunk=4), ins)


def test_large_delta_stays_finite_and_exact():
    """Large delta drives exp(delta*A) to 0: the multiplicative form must not overflow."""
    ins = _inputs(2, 64, 6, 8, dtype=torch.float32, delta_scale=500.0)
    y, grads = _fwd_bwd(lambda *a: chunked_selective_scan(*a, chunk=32), ins)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    ins64 = [t.detach().double().requires_grad_() for t in ins]
    y_ref, _ = _fwd_bwd(selective_scan_reference, ins64)
    assert (y.double() - y_ref).abs().max() < 1e-3 * max(1.0, y_ref.abs().max().item())


def test_extras_match_mamba_ssm_semantics():
    u, delta, A, B, C = (t.detach() for t in _inputs(2, 10, 4, 3))
    D, z, bias = torch.randn(4, dtype=torch.float64), torch.randn(2, 10, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, chunk=3)
    dsp = torch.nn.functional.softplus(delta + bias)
    expect = (selective_scan_reference(u, dsp, A, B, C) + u * D) * torch.nn.functional.silu(z)
    assert (y - expect).abs().max() < 1e-12


def test_bad_shapes_raise_with_shapes():
    u, delta, A, B, C = (t.detach() for t in _inputs(2, 5, 4, 3))
    with pytest.raises(ValueError, match=r"A \[d=4, n\]"):
        chunked_selective_scan(u, delta, A[:3], B, C)
    with pytest.raises(ValueError, match=r"\[2, 5, 2\]"):
        chunked_selective_scan(u, delta, A, B[..., :2], C)
    with pytest.raises(ValueError, match="chunk"):
        chunked_selective_scan(u, delta, A, B, C, chunk=0)


def test_mamba_block_matches_mambapy_on_same_weights():
    mambapy = pytest.importorskip("mambapy.mamba", reason="mambapy (test dependency) not installed")
    torch.manual_seed(0)
    ours = MambaBlock(32, d_state=8, d_conv=4, expand=2, backend="torch", chunk=5)
    ref = mambapy.MambaBlock(mambapy.MambaConfig(d_model=32, n_layers=1, d_state=8, expand_factor=2, d_conv=4))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 37, 32, requires_grad=True)
    y, y_ref = ours(x), ref(x)
    assert (y - y_ref).abs().max() < 1e-5
    params = [x, *ours.parameters()]
    g = torch.autograd.grad(y.square().sum(), params)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *ref.parameters()])
    for (name, _), a, b in zip([("x", None), *ours.named_parameters()], g, g_ref):
        assert (a - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item()), name
    assert ours.backend == "torch scan"
