"""Checks of stitchers: ``[B,V,P,D]`` + layout + grid -> ``StitchedTokens`` (tokens ``[B,T,D]`` + positions)."""

from __future__ import annotations

import math

import torch

from cora_kit.interfaces import StitchedTokens
from cora_kit.testing.base import GRID, Subject, close, expect, finite, randn, register, shape
from cora_kit.testing.fixtures import tile_layout


def _stitch(s: Subject, feats: torch.Tensor) -> StitchedTokens:
    out = s.make()(feats, tile_layout(), GRID)
    expect(isinstance(out, StitchedTokens), f"{s.label} returned {type(out).__name__}; expected StitchedTokens")
    return out


def check_output_shape(s: Subject) -> str | None:
    """``[B,V,P,D]`` -> tokens ``[B,T,D]`` with T positions inside the layout and grid."""
    layout = tile_layout()
    out = _stitch(s, randn(2, layout.num_views, GRID[0] * GRID[1], 8))
    pos, t = out.positions, out.tokens.shape[1]
    expect(out.tokens.dim() == 3 and out.tokens.shape[0] == 2 and out.tokens.shape[2] == 8,
           f"{s.label} returned tokens {shape(out.tokens)}; expected [2, T, 8]")
    for name in ("lon", "lat", "view", "row", "col"):
        n = getattr(pos, name).numel()
        expect(n == t, f"{s.label}: positions.{name} has {n} entries; expected T = {t}")
    expect(bool((pos.view >= 0).all() and (pos.view < layout.num_views).all()), f"{s.label}: positions.view outside [0, {layout.num_views})")
    expect(bool((pos.row >= 0).all() and (pos.row < GRID[0]).all() and (pos.col >= 0).all() and (pos.col < GRID[1]).all()),
           f"{s.label}: positions.row/col outside the grid {GRID}")
    expect(finite(pos.lon) and finite(pos.lat) and bool(pos.lat.abs().max() <= math.pi / 2 + 1e-4),
           f"{s.label}: positions.lat must be finite radians in [-pi/2, pi/2]")
    return f"T = {t}"


def check_tokens_match_positions(s: Subject) -> str | None:
    """Token t is the feature at (view[t], row[t], col[t]); selection is deterministic."""
    feats = randn(2, 9, GRID[0] * GRID[1], 8)
    out = _stitch(s, feats)
    p = out.positions
    want = feats[:, p.view, p.row * GRID[1] + p.col]
    ok, diff = close(out.tokens, want, atol=0.0, rtol=0.0)
    expect(ok, f"{s.label}: tokens differ from features at their positions by {diff:.3g}")
    again = s.make().select(tile_layout(), GRID)
    expect(torch.equal(again.view, p.view) and torch.equal(again.col, p.col), f"{s.label}: select() is not deterministic")
    return None


def check_gradients_flow(s: Subject) -> str | None:
    """Gradients reach the features; bfloat16 features give bfloat16 tokens."""
    feats = randn(2, 9, GRID[0] * GRID[1], 8).requires_grad_(True)
    _stitch(s, feats).tokens.sum().backward()
    expect(feats.grad is not None and bool(feats.grad.abs().sum() > 0), f"{s.label}: no gradient reached the features")
    tokens = _stitch(s, randn(2, 9, GRID[0] * GRID[1], 8).bfloat16()).tokens
    expect(tokens.dtype == torch.bfloat16, f"{s.label} returned {tokens.dtype} tokens for bfloat16 features; expected torch.bfloat16")
    return None


for _func in (check_output_shape, check_tokens_match_positions, check_gradients_flow):
    register(_func, ["stitcher"])
