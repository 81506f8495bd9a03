"""Checks of overlap losses: ``forward(features [B,V,P,D], correspondences, grid) -> (scalar, logs)``.

Losses run on three tiles 45 deg apart with the real geometric correspondences, and on
hand-made strip correspondences where both sides of every pair are identical. A loss with
``two_views = True`` gets ``second_view=`` (the features plus 1% noise), as the pipeline
passes a second overlap-head pass.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from cora_kit.geometry import Correspondences, overlap_correspondences
from cora_kit.interfaces import Grid
from cora_kit.testing.base import CheckFailure, CheckSkipped, Subject, close, expect, finite, randn, register, save_load_safetensors, shape
from cora_kit.testing.fixtures import strip_correspondences, tile_layout, world_features

LOSS_GRID: Grid = (4, 4)
LOSS_SHIFT = 2


def loss_inputs(identical: bool = False, fill: float | None = None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, Correspondences]:
    """features ``[2,3,16,32]`` of 3 views on a 4x4 grid + correspondences: geometric (3
    tiles 45 deg apart, FOV 90), or hand-made integer strips for ``identical``, where the
    features agree on every pair."""
    if identical:
        corr = strip_correspondences(3, LOSS_GRID, LOSS_SHIFT)
    else:
        corr = overlap_correspondences(tile_layout(3, with_global=False), LOSS_GRID)
    if fill is not None:
        feats = torch.full((2, 3, 16, 32), fill)
    elif identical:
        feats = world_features(2, 3, LOSS_GRID, 32, LOSS_SHIFT)
    else:
        feats = randn(2, 3, 16, 32, seed=3)
    return feats.to(dtype), corr


def call_loss(s: Subject, loss: Any, inputs: tuple[torch.Tensor, Correspondences]) -> tuple[Any, Any]:
    """Call the loss as the pipeline does (``second_view=`` when it declares ``two_views``);
    constant features get an identical second view, others the features plus 1% noise."""
    feats, corr = inputs
    kwargs: dict[str, Any] = {}
    if loss.two_views:
        constant = bool((feats == feats.flatten()[0]).all())
        noise = randn(*feats.shape, seed=11).to(feats.dtype)
        kwargs["second_view"] = feats.detach().clone() if constant else feats + 0.01 * noise
    out = loss(feats, corr, LOSS_GRID, **kwargs)
    expect(isinstance(out, tuple) and len(out) == 2, f"{s.label} returned {type(out).__name__}; expected (scalar tensor, logs dict)")
    return out


def loss_value(s: Subject, loss: Any, inputs: tuple[torch.Tensor, Correspondences]) -> torch.Tensor:
    """The loss's value, which must be a 0-dim float tensor (else one clear failure naming
    ``check_scalar_and_logs``, instead of a PyTorch error in the follow-on checks)."""
    value = call_loss(s, loss, inputs)[0]
    if not (isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point()):
        raise CheckFailure(f"{s.label} returned loss {shape(value)}; expected a 0-dim float tensor (see check_scalar_and_logs)")
    return value


def check_scalar_and_logs(s: Subject) -> str | None:
    """Returns a finite 0-dim float tensor and a ``{str: float}`` logs dict."""
    value, logs = call_loss(s, s.make(), loss_inputs())
    expect(isinstance(value, torch.Tensor) and value.dim() == 0,
           f"{s.label} returned loss {shape(value)}; expected a 0-dim tensor")
    expect(value.dtype == torch.float32 and finite(value), f"{s.label} returned {value.dtype} loss {value.item()}; expected a finite float32")
    expect(isinstance(logs, dict) and all(isinstance(k, str) and isinstance(v, float) for k, v in logs.items()),
           f"{s.label} logs are {logs!r}; expected dict[str, float] (call float() on tensors)")
    return f"loss {value.item():.4g}, logs {sorted(logs)}"


def check_two_views_declared(s: Subject) -> str | None:
    """``two_views`` is a bool and agrees with ``forward``: True iff it takes ``second_view``."""
    loss = s.make()
    takes = "second_view" in inspect.signature(loss.forward).parameters
    expect(isinstance(loss.two_views, bool), f"{s.label}.two_views is {loss.two_views!r}; expected a bool")
    expect(takes == loss.two_views,
           f"{s.label}.two_views is {loss.two_views} but forward {'takes' if takes else 'does not take'} second_view;"
           " set two_views = True exactly when forward accepts second_view= (the pipeline passes it only then)")
    return f"two_views={loss.two_views}"


def check_gradients_flow(s: Subject) -> str | None:
    """The loss gives finite, non-zero gradients to the features."""
    feats, corr = loss_inputs()
    feats.requires_grad_(True)
    loss = s.make().train()
    torch.manual_seed(0)
    value = loss_value(s, loss, (feats, corr))
    expect(value.requires_grad, f"{s.label} returned a loss that does not require grad: it is detached from the"
           " features (computed under torch.no_grad, or rebuilt from .item()/.detach()?)")
    value.backward()
    expect(feats.grad is not None and finite(feats.grad) and bool(feats.grad.abs().sum() > 0),
           f"{s.label}: features got {'no' if feats.grad is None else 'a zero or non-finite'} gradient;"
           " expected the loss to depend on them")
    return None


def check_dtype_float32_bf16(s: Subject) -> str | None:
    """bfloat16 features give a finite loss."""
    with torch.no_grad():
        value = loss_value(s, s.make(), loss_inputs(dtype=torch.bfloat16))
    expect(finite(value), f"{s.label} returned {value} for bfloat16 features; expected a finite loss")
    return f"{value.dtype}"


def check_determinism_with_seed(s: Subject) -> str | None:
    """Same seed -> the same loss value."""
    vals = []
    for _ in range(2):
        loss = s.make(seed=5).train()
        torch.manual_seed(7)
        with torch.no_grad():
            vals.append(loss_value(s, loss, loss_inputs()))
    expect(torch.equal(vals[0], vals[1]), f"{s.label}: seed 5 gave {vals[0].item()} then {vals[1].item()}; expected identical")
    return None


def check_no_nan_on_constant_input(s: Subject) -> str | None:
    """Constant features (zero variance) give a finite loss."""
    for fill in (0.0, 1.0):
        with torch.no_grad():
            value = loss_value(s, s.make(), loss_inputs(fill=fill))
        expect(finite(value), f"{s.label} returned {value.item()} for constant features (all {fill}); expected finite (add eps to std/norm)")
    return None


def check_identical_pairs_lower_than_random(s: Subject) -> str | None:
    """Features that agree on every correspondence score lower than unrelated features."""
    loss = s.make()
    with torch.no_grad():
        same = loss_value(s, loss, loss_inputs(identical=True)).item()
        rand = loss_value(s, loss, loss_inputs()).item()
    expect(same < rand, f"{s.label}: loss {same:.4g} for identical overlaps vs {rand:.4g} for random features; expected lower for identical")
    return f"{same:.4g} < {rand:.4g}"


def check_zero_for_identical_pairs(s: Subject) -> str | None:
    """A loss declaring ``zero_for_identical_pairs`` is ~0 when every pair agrees."""
    loss = s.make()
    if not loss.zero_for_identical_pairs:
        raise CheckSkipped("the loss does not declare zero_for_identical_pairs = True")
    with torch.no_grad():
        value = loss_value(s, loss, loss_inputs(identical=True)).item()
    expect(abs(value) < 1e-4, f"{s.label} returned {value:.4g} for identical overlaps; expected 0 (it declares zero_for_identical_pairs)")
    return None


def check_state_dict_roundtrip_safetensors(s: Subject) -> str | None:
    """Weights saved with safetensors and loaded into a fresh instance reproduce the loss."""
    a, b = s.make(seed=0), s.make(seed=1)
    if not a.state_dict():
        return "no state to save"
    n = save_load_safetensors(a, b)
    with torch.no_grad():
        ya, yb = loss_value(s, a, loss_inputs()), loss_value(s, b, loss_inputs())
    ok, diff = close(ya, yb, atol=0.0, rtol=0.0)
    expect(ok, f"{s.label}: loss differs by {diff:.3g} after a safetensors round trip; expected identical (state not in state_dict?)")
    return f"{n} tensors"


for _func in (check_scalar_and_logs, check_two_views_declared, check_gradients_flow, check_dtype_float32_bf16,
              check_determinism_with_seed, check_no_nan_on_constant_input, check_identical_pairs_lower_than_random,
              check_zero_for_identical_pairs, check_state_dict_roundtrip_safetensors):
    register(_func, ["loss"])
