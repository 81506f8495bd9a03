"""Conformance checks for cora-kit plugins (the model: scikit-learn's ``check_estimator``).

Each plugin kind has named checks (``check_output_shape``, ``check_gradients_flow``, ...);
each check builds the plugin at a small config, feeds it small inputs and raises
``CheckFailure`` with what was expected, what was got and what to do. Use them:

* from pytest, in a plugin package's tests::

      from cora_kit.testing import parametrize_checks

      @parametrize_checks("resampler", "my-resampler")
      def test_cora_kit_contract(check):
          check()

* programmatically: ``run_checks("resampler", "my-resampler") -> list[CheckResult]``;
* from the shell: ``cora-kit check-plugin my-resampler``.

Small configs: a plugin's params model may set ``testing_params: ClassVar[dict]`` (e.g.
``{"num_layers": 1}``); resamplers also get ``in_dim``/``out_dim`` of 32/48 (32/32 when the
defaults are equal) and ``hidden_dim`` 64. ``params=`` overrides both. A loss that is exactly zero when the two
sides of every correspondence are identical declares ``zero_for_identical_pairs = True``.
"""

from __future__ import annotations

import copy
import inspect
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from cora_kit import interfaces as I
from cora_kit.geometry import Correspondences, OverlapPair, TileLayout, ViewCamera
from cora_kit.hookspecs import KINDS
from cora_kit.registry import REGISTRY, PluginSpec

GRID: I.Grid = (16, 16)  # the seed's token grid per view
INTERFACE: dict[str, type] = {
    "tiler": I.Tiler,
    "encoder": I.VisionEncoder,
    "resampler": I.Resampler,
    "loss": I.OverlapLoss,
    "stitcher": I.Stitcher,
    "llm": I.LLMAdapter,
    "metric": I.Metric,
}


class CheckFailure(AssertionError):
    """A plugin broke its contract; the message says expected / got / fix."""


class CheckSkipped(Exception):
    """A check does not apply (missing CUDA, metric unavailable, property not declared)."""


@dataclass
class CheckResult:
    """Outcome of one check on one plugin. ``status``: passed, failed, skipped, xfailed."""

    kind: str
    plugin: str
    check: str
    status: str
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class Subject:
    """The plugin under test: its spec and the small params it is built with."""

    kind: str
    spec: PluginSpec
    params: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.spec.name}'"

    def make(self, seed: int = 0) -> Any:
        """A fresh instance, built after ``torch.manual_seed(seed)``; modules in eval mode."""
        torch.manual_seed(seed)
        obj = self.spec.factory(**self.spec.validate_params(dict(self.params)))
        if isinstance(obj, torch.nn.Module):
            obj.eval()
        return obj


@dataclass(frozen=True)
class Check:
    name: str
    kinds: tuple[str, ...]
    func: Callable[[Subject], str | None]
    doc: str


CHECKS: list[Check] = []


def _check(*kinds: str) -> Callable[[Callable[[Subject], str | None]], Callable[[Subject], str | None]]:
    """Register a check function for ``kinds`` (its name is the function name, sans kind suffix)."""

    def deco(func: Callable[[Subject], str | None]) -> Callable[[Subject], str | None]:
        name = func.__name__.split("__")[0]
        CHECKS.append(Check(name, kinds, func, (func.__doc__ or "").strip().splitlines()[0]))
        return func

    return deco


def checks_for(kind: str) -> list[Check]:
    """The checks that apply to ``kind``, in a stable order."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    return [c for c in CHECKS if kind in c.kinds]


# --- helpers ----------------------------------------------------------------


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailure(message)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach().float()).all())


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> tuple[bool, float]:
    diff = float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0
    return bool(torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)), diff


def small_params(spec: PluginSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Params for a fast check run: small resampler dims (``in_dim``/``out_dim`` 32/48,
    ``hidden_dim`` 64), then ``testing_params`` of the params model, then ``overrides``."""
    params: dict[str, Any] = {}
    model = spec.params_model
    fields = model.model_fields if model is not None else {}
    if spec.kind == "resampler" and {"in_dim", "out_dim"} <= set(fields):
        same = fields["in_dim"].default == fields["out_dim"].default
        params.update(in_dim=32, out_dim=32 if same else 48)
        if "hidden_dim" in fields:
            params["hidden_dim"] = 64
    elif spec.kind == "resampler" and "in_dim" in fields:  # keeps its width (identity)
        params.update(in_dim=32)
    params.update(dict(getattr(model, "testing_params", None) or {}))
    params.update(dict(overrides or {}))
    return params


def tile_layout(num_tiles: int = 8, with_global: bool = True, size: int = 256, fov: float = 90.0) -> TileLayout:
    """The seed's e2p layout: optional global view, then ``num_tiles`` pitch-0 tiles 45 deg apart."""
    views = [ViewCamera(0.0, 0.0, 360.0, size, is_global=True, projection="erp")] if with_global else []
    views += [ViewCamera(45.0 * i, 0.0, fov, size) for i in range(num_tiles)]
    return TileLayout(tuple(views), name="e2p")


def strip_correspondences(num_views: int, grid: I.Grid, shift: int) -> Correspondences:
    """Hand-made correspondences of a strip of views: column ``c >= shift`` of view ``v``
    sees what column ``c - shift`` of view ``v+1`` sees (and back), at integer positions."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pairs: list[OverlapPair] = []
    for v in range(num_views - 1):
        for src, dst, sel, off in ((v, v + 1, cols >= shift, -shift), (v + 1, v, cols < w - shift, shift)):
            idx = (rows * w + cols)[sel]
            rowcol = torch.stack([rows[sel], cols[sel] + off], dim=-1).float()
            pairs.append(OverlapPair(src, dst, idx, rowcol))
    return Correspondences(pairs, grid, mode="seed-strip", view_indices=list(range(num_views)))


def world_features(batch: int, num_views: int, grid: I.Grid, dim: int, shift: int, seed: int = 0) -> torch.Tensor:
    """``[B,V,P,D]`` cut from one random feature panorama: identical on every correspondence
    of ``strip_correspondences(num_views, grid, shift)``."""
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    world = torch.randn(batch, h, shift * (num_views - 1) + w, dim, generator=gen)
    views = [world[:, :, v * shift : v * shift + w] for v in range(num_views)]
    return torch.stack(views, dim=1).reshape(batch, num_views, h * w, dim)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _save_load_safetensors(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Write ``src``'s state with safetensors and load it into ``dst``; returns #tensors."""
    from safetensors.torch import load_model, save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        save_model(src, str(path))
        missing, unexpected = load_model(dst, str(path), strict=True)
        _expect(not missing and not unexpected, f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    return len(src.state_dict())


# --- checks for every kind --------------------------------------------------


@_check(*KINDS)
def check_params_schema(s: Subject) -> str | None:
    """Params model: pydantic, forbids unknown keys, defaults for every field, matches the factory."""
    model = s.spec.params_model
    if model is None:
        sig = inspect.signature(s.spec.factory)
        required = [p.name for p in sig.parameters.values() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        _expect(not required, f"{s.label} registers no params model but its factory requires {required}; register params=<pydantic model>")
        return "no parameters"
    _expect(issubclass(model, BaseModel), f"{s.label}: params must be a pydantic model, got {model!r}")
    _expect(model.model_config.get("extra") == "forbid",
            f"{s.label}: params model {model.__name__} accepts unknown keys (extra={model.model_config.get('extra')!r}); "
            "subclass cora_kit.interfaces.PluginParams or set model_config = ConfigDict(extra='forbid')")
    missing = [n for n, f in model.model_fields.items() if f.is_required()]
    _expect(not missing, f"{s.label}: params {missing} have no default; expected every field to default to the seed value")
    model.model_json_schema()
    defaults = model()
    _expect(model(**defaults.model_dump()) == defaults, f"{s.label}: params do not round-trip through model_dump()")
    sig = inspect.signature(s.spec.factory)
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [n for n in model.model_fields if n not in sig.parameters and not takes_kwargs]
    _expect(not unknown, f"{s.label}: factory {getattr(s.spec.factory, '__name__', s.spec.factory)} does not accept params {unknown}")
    return f"{len(model.model_fields)} fields"


@_check(*KINDS)
def check_interface(s: Subject) -> str | None:
    """The built object implements the kind's interface from cora_kit.interfaces."""
    obj = s.make()
    base = INTERFACE[s.kind]
    _expect(isinstance(obj, base), f"{s.label} built a {type(obj).__name__}; expected a subclass of cora_kit.interfaces.{base.__name__}")
    if s.kind == "resampler":
        want = s.spec.validate_params(dict(s.params))
        for attr in ("in_dim", "out_dim"):
            if attr in want:
                _expect(getattr(obj, attr, None) == want[attr], f"{s.label}.{attr} is {getattr(obj, attr, None)}; expected {want[attr]} (its param)")
    return type(obj).__name__


# --- module kinds: resampler and encoder -------------------------------------


def _input(s: Subject, batch: int = 2, fill: float | None = None, seed: int = 0) -> tuple[torch.Tensor, I.Grid]:
    """A valid input batch for a resampler ``[N,P,Din]`` or encoder ``[N,3,s,s]``."""
    if s.kind == "resampler":
        shape = (batch, GRID[0] * GRID[1], s.spec.validate_params(dict(s.params)).get("in_dim", 32))
        grid = GRID
    else:
        enc = s.cache.setdefault("encoder", s.make())
        shape, grid = (batch, 3, enc.image_size, enc.image_size), tuple(enc.grid)
    x = torch.full(shape, fill) if fill is not None else _randn(*shape, seed=seed)
    if s.kind == "encoder" and fill is None:
        x = x.sigmoid()  # pixels in [0, 1]
    return x, grid  # type: ignore[return-value]


def _run(s: Subject, module: Any, x: torch.Tensor, grid: I.Grid) -> torch.Tensor:
    return module(x, grid) if s.kind == "resampler" else module(x)


def _expected_shape(s: Subject, module: Any, x: torch.Tensor, grid: I.Grid) -> tuple[list[int], str]:
    if s.kind == "resampler":
        g = tuple(module.output_grid(grid))
        return [x.shape[0], g[0] * g[1], module.out_dim], f"declared grid {g}"
    return [x.shape[0], module.grid[0] * module.grid[1], module.hidden_size], f"grid {tuple(module.grid)}, hidden_size {module.hidden_size}"


@_check("resampler", "encoder")
def check_output_shape(s: Subject) -> str | None:
    """Output ``[N,P',D]`` matches the declared grid and output width."""
    module = s.make()
    x, grid = _input(s)
    with torch.no_grad():
        y = _run(s, module, x, grid)
    want, why = _expected_shape(s, module, x, grid)
    _expect(isinstance(y, torch.Tensor), f"{s.label} returned {type(y).__name__}; expected a tensor {want}")
    _expect(_shape(y) == want, f"{s.label} returned {_shape(y)}; expected {want} for {why}")
    return f"{_shape(x)} -> {_shape(y)}"


@_check("resampler")
def check_declared_grid(s: Subject) -> str | None:
    """``output_grid`` returns two positive ints and the token count follows it for another grid."""
    module = s.make()
    for grid in (GRID, (8, 8)):
        g = module.output_grid(grid)
        _expect(isinstance(g, tuple) and len(g) == 2 and all(isinstance(v, int) and v > 0 for v in g),
                f"{s.label}.output_grid({grid}) returned {g!r}; expected a tuple of two positive ints")
    x = _randn(2, 64, module.in_dim)
    with torch.no_grad():
        y = module(x, (8, 8))
    want = [2, g[0] * g[1], module.out_dim]
    _expect(_shape(y) == want, f"{s.label} returned {_shape(y)}; expected {want} for declared grid {g} (input grid (8, 8))")
    return f"(16, 16) -> {module.output_grid(GRID)}, (8, 8) -> {g}"


@_check("resampler", "encoder")
def check_dtype_float32_bf16(s: Subject) -> str | None:
    """float32 in -> float32 out; a bfloat16 model on bfloat16 input -> finite bfloat16 out."""
    module = s.make()
    x, grid = _input(s)
    with torch.no_grad():
        y = _run(s, module, x, grid)
        _expect(y.dtype == torch.float32, f"{s.label} returned {y.dtype} for float32 input; expected torch.float32")
        module = module.to(torch.bfloat16)
        yb = _run(s, module, x.bfloat16(), grid)
    _expect(yb.dtype == torch.bfloat16, f"{s.label} returned {yb.dtype} for a bfloat16 model and input; expected torch.bfloat16")
    _expect(_finite(yb), f"{s.label} returned NaN/Inf in bfloat16")
    return None


@_check("resampler", "encoder")
def check_batch_independence(s: Subject) -> str | None:
    """In eval mode each sample's output does not depend on the others in the batch."""
    module = s.make()
    x, grid = _input(s, batch=3)
    with torch.no_grad():
        full = _run(s, module, x, grid)
        alone = _run(s, module, x[1:2], grid)
    ok, diff = _close(full[1:2], alone)
    _expect(ok, f"{s.label}: sample 1 differs by {diff:.3g} when run alone vs in a batch of 3; expected no cross-sample mixing (batch statistics in eval mode?)")
    return f"max diff {diff:.2g}"


@_check("resampler", "encoder")
def check_determinism_with_seed(s: Subject) -> str | None:
    """Same seed -> same weights and the same train-mode output (dropout included)."""
    outs = []
    for _ in range(2):
        module = s.make(seed=123).train()
        x, grid = _input(s)
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(_run(s, module, x, grid))
    ok, diff = _close(outs[0], outs[1], atol=0.0, rtol=0.0)
    _expect(ok, f"{s.label}: two builds with seed 123 gave outputs differing by {diff:.3g}; expected identical (use torch's RNG, not an unseeded one)")
    return None


@_check("resampler", "encoder")
def check_gradients_flow(s: Subject) -> str | None:
    """A loss on the output gives finite gradients to the input and every trainable parameter."""
    module = s.make().train()
    x, grid = _input(s)
    x.requires_grad_(True)
    torch.manual_seed(0)
    y = _run(s, module, x, grid)
    (y * _randn(*y.shape, seed=1)).sum().backward()
    _expect(x.grad is not None and _finite(x.grad) and bool(x.grad.abs().sum() > 0),
            f"{s.label}: the input got {'no' if x.grad is None else 'a zero or non-finite'} gradient; expected the output to depend differentiably on the input")
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    dead = [n for n, p in params if p.grad is None]
    bad = [n for n, p in params if p.grad is not None and not _finite(p.grad)]
    _expect(not dead, f"{s.label}: trainable parameters got no gradient: {dead[:5]}; expected all to be used (or set requires_grad=False)")
    _expect(not bad, f"{s.label}: non-finite gradients in {bad[:5]}")
    return f"{len(params)} trainable tensors"


@_check("resampler", "encoder", "loss")
def check_state_dict_roundtrip_safetensors(s: Subject) -> str | None:
    """Weights saved with safetensors and loaded into a fresh instance reproduce the output."""
    a, b = s.make(seed=0), s.make(seed=1)
    if not a.state_dict():
        return "no state to save"
    n = _save_load_safetensors(a, b)
    with torch.no_grad():
        if s.kind == "loss":
            ya, yb = _loss_call(s, a, _loss_inputs()[0]), _loss_call(s, b, _loss_inputs()[0])
            ya, yb = ya[0], yb[0]
        else:
            x, grid = _input(s)
            ya, yb = _run(s, a, x, grid), _run(s, b, x, grid)
    ok, diff = _close(ya, yb, atol=0.0, rtol=0.0)
    _expect(ok, f"{s.label}: output differs by {diff:.3g} after a safetensors round trip; expected identical (state not in state_dict?)")
    return f"{n} tensors"


@_check("resampler", "encoder")
def check_no_nan_on_constant_input(s: Subject) -> str | None:
    """Constant input (zeros, 0.5) gives a finite output (no division by a zero std)."""
    module = s.make()
    for fill in (0.0, 0.5):
        x, grid = _input(s, fill=fill)
        with torch.no_grad():
            y = _run(s, module, x, grid)
        _expect(_finite(y), f"{s.label} returned NaN/Inf for a constant input (all {fill}) {_shape(x)}; expected finite values (add eps to normalisations)")
    return None


@_check("encoder")
def check_frozen_split(s: Subject) -> str | None:
    """``forward(x) == forward_trainable(forward_frozen(x, k), k)`` and the block parameters exist."""
    enc = s.make()
    x, _ = _input(s)
    with torch.no_grad():
        ref = enc(x)
        for k in sorted({0, 1, enc.num_blocks}):
            ok, diff = _close(enc.forward_trainable(enc.forward_frozen(x, k), k), ref)
            _expect(ok, f"{s.label}: forward_trainable(forward_frozen(x, {k}), {k}) differs from forward(x) by {diff:.3g}")
    ids = {id(p) for p in enc.parameters()}
    block = enc.trainable_block_parameters(1)
    _expect(len(block) > 0 and all(id(p) in ids for p in block), f"{s.label}.trainable_block_parameters(1) returned {len(block)} tensors; expected the last block's parameters")
    return f"{enc.num_blocks} blocks"


# --- loss -------------------------------------------------------------------

_LOSS_GRID: I.Grid = (4, 4)
_LOSS_SHIFT = 2


def _loss_inputs(identical: bool = False, fill: float | None = None, dtype: torch.dtype = torch.float32) -> tuple[tuple[torch.Tensor, Correspondences], None]:
    """features ``[2,3,16,32]`` of 3 views on a 4x4 grid + geometric correspondences
    (hand-made integer strips for ``identical``, where the features agree on every pair)."""
    if identical:
        corr = strip_correspondences(3, _LOSS_GRID, _LOSS_SHIFT)
    else:  # the real geometry: 3 tiles 45 deg apart, FOV 90
        from cora_kit.geometry import overlap_correspondences

        corr = overlap_correspondences(tile_layout(3, with_global=False), _LOSS_GRID)
    if fill is not None:
        feats = torch.full((2, 3, 16, 32), fill)
    elif identical:
        feats = world_features(2, 3, _LOSS_GRID, 32, _LOSS_SHIFT)
    else:
        feats = _randn(2, 3, 16, 32, seed=3)
    return (feats.to(dtype), corr), None


def _loss_call(s: Subject, loss: Any, inputs: tuple[torch.Tensor, Correspondences]) -> tuple[torch.Tensor, dict[str, float]]:
    """Call the loss; one whose forward takes ``second_view`` (a second overlap-head pass,
    e.g. InfoNCE's within-tile term) gets the features plus 1% noise (constant ones as-is)."""
    feats, corr = inputs
    kwargs: dict[str, Any] = {}
    if "second_view" in inspect.signature(loss.forward).parameters:
        constant = bool((feats == feats.flatten()[0]).all())
        noise = _randn(*feats.shape, seed=11).to(feats.dtype)
        kwargs["second_view"] = feats.detach().clone() if constant else feats + 0.01 * noise
    out = loss(feats, corr, _LOSS_GRID, **kwargs)
    _expect(isinstance(out, tuple) and len(out) == 2, f"{s.label} returned {type(out).__name__}; expected (scalar tensor, logs dict)")
    return out


@_check("loss")
def check_scalar_and_logs__loss(s: Subject) -> str | None:
    """Returns a finite 0-dim float tensor and a ``{str: float}`` logs dict."""
    value, logs = _loss_call(s, s.make(), _loss_inputs()[0])
    _expect(isinstance(value, torch.Tensor) and value.dim() == 0, f"{s.label} returned loss {_shape(value) if isinstance(value, torch.Tensor) else type(value).__name__}; expected a 0-dim tensor")
    _expect(value.dtype == torch.float32 and _finite(value), f"{s.label} returned {value.dtype} loss {value.item()}; expected a finite float32")
    _expect(isinstance(logs, dict) and all(isinstance(k, str) and isinstance(v, float) for k, v in logs.items()),
            f"{s.label} logs are {logs!r}; expected dict[str, float] (call float() on tensors)")
    return f"loss {value.item():.4g}, logs {sorted(logs)}"


@_check("loss")
def check_gradients_flow__loss(s: Subject) -> str | None:
    """The loss gives finite, non-zero gradients to the features."""
    (feats, corr), _ = _loss_inputs()
    feats.requires_grad_(True)
    loss = s.make().train()
    torch.manual_seed(0)
    value, _ = _loss_call(s, loss, (feats, corr))
    value.backward()
    _expect(feats.grad is not None and _finite(feats.grad) and bool(feats.grad.abs().sum() > 0),
            f"{s.label}: features got {'no' if feats.grad is None else 'a zero or non-finite'} gradient; expected the loss to depend on them")
    return None


@_check("loss")
def check_dtype_float32_bf16__loss(s: Subject) -> str | None:
    """bfloat16 features give a finite loss."""
    with torch.no_grad():
        value, _ = _loss_call(s, s.make(), _loss_inputs(dtype=torch.bfloat16)[0])
    _expect(_finite(value), f"{s.label} returned {value} for bfloat16 features; expected a finite loss")
    return f"{value.dtype}"


@_check("loss")
def check_determinism_with_seed__loss(s: Subject) -> str | None:
    """Same seed -> the same loss value."""
    vals = []
    for _ in range(2):
        loss = s.make(seed=5).train()
        torch.manual_seed(7)
        with torch.no_grad():
            vals.append(_loss_call(s, loss, _loss_inputs()[0])[0])
    _expect(torch.equal(vals[0], vals[1]), f"{s.label}: seed 5 gave {vals[0].item()} then {vals[1].item()}; expected identical")
    return None


@_check("loss")
def check_no_nan_on_constant_input__loss(s: Subject) -> str | None:
    """Constant features (zero variance) give a finite loss."""
    for fill in (0.0, 1.0):
        with torch.no_grad():
            value, _ = _loss_call(s, s.make(), _loss_inputs(fill=fill)[0])
        _expect(_finite(value), f"{s.label} returned {value.item()} for constant features (all {fill}); expected finite (add eps to std/norm)")
    return None


@_check("loss")
def check_identical_pairs_lower_than_random(s: Subject) -> str | None:
    """Features that agree on every correspondence score lower than unrelated features."""
    loss = s.make()
    with torch.no_grad():
        same = _loss_call(s, loss, _loss_inputs(identical=True)[0])[0].item()
        rand = _loss_call(s, loss, _loss_inputs()[0])[0].item()
    _expect(same < rand, f"{s.label}: loss {same:.4g} for identical overlaps vs {rand:.4g} for random features; expected lower for identical")
    return f"{same:.4g} < {rand:.4g}"


@_check("loss")
def check_zero_for_identical_pairs(s: Subject) -> str | None:
    """A loss declaring ``zero_for_identical_pairs`` is ~0 when every pair agrees."""
    loss = s.make()
    if not getattr(loss, "zero_for_identical_pairs", False):
        raise CheckSkipped("the loss does not declare zero_for_identical_pairs = True")
    with torch.no_grad():
        value = _loss_call(s, loss, _loss_inputs(identical=True)[0])[0].item()
    _expect(abs(value) < 1e-4, f"{s.label} returned {value:.4g} for identical overlaps; expected 0 (it declares zero_for_identical_pairs)")
    return None


# --- stitcher ---------------------------------------------------------------


def _stitch(s: Subject, feats: torch.Tensor) -> I.StitchedTokens:
    out = s.make()(feats, tile_layout(), GRID)
    _expect(isinstance(out, I.StitchedTokens), f"{s.label} returned {type(out).__name__}; expected StitchedTokens")
    return out


@_check("stitcher")
def check_output_shape__stitcher(s: Subject) -> str | None:
    """``[B,V,P,D]`` -> tokens ``[B,T,D]`` with T positions inside the layout and grid."""
    layout = tile_layout()
    out = _stitch(s, _randn(2, layout.num_views, GRID[0] * GRID[1], 8))
    pos, t = out.positions, out.tokens.shape[1]
    _expect(out.tokens.dim() == 3 and out.tokens.shape[0] == 2 and out.tokens.shape[2] == 8,
            f"{s.label} returned tokens {_shape(out.tokens)}; expected [2, T, 8]")
    for name in ("lon", "lat", "view", "row", "col"):
        n = getattr(pos, name).numel()
        _expect(n == t, f"{s.label}: positions.{name} has {n} entries; expected T = {t}")
    _expect(bool((pos.view >= 0).all() and (pos.view < layout.num_views).all()), f"{s.label}: positions.view outside [0, {layout.num_views})")
    _expect(bool((pos.row >= 0).all() and (pos.row < GRID[0]).all() and (pos.col >= 0).all() and (pos.col < GRID[1]).all()),
            f"{s.label}: positions.row/col outside the grid {GRID}")
    _expect(_finite(pos.lon) and _finite(pos.lat) and bool(pos.lat.abs().max() <= math.pi / 2 + 1e-4),
            f"{s.label}: positions.lat must be finite radians in [-pi/2, pi/2]")
    return f"T = {t}"


@_check("stitcher")
def check_tokens_match_positions(s: Subject) -> str | None:
    """Token t is the feature at (view[t], row[t], col[t]); selection is deterministic."""
    feats = _randn(2, 9, GRID[0] * GRID[1], 8)
    out = _stitch(s, feats)
    p = out.positions
    want = feats[:, p.view, p.row * GRID[1] + p.col]
    ok, diff = _close(out.tokens, want, atol=0.0, rtol=0.0)
    _expect(ok, f"{s.label}: tokens differ from features at their positions by {diff:.3g}")
    again = s.make().select(tile_layout(), GRID)
    _expect(torch.equal(again.view, p.view) and torch.equal(again.col, p.col), f"{s.label}: select() is not deterministic")
    return None


@_check("stitcher")
def check_gradients_flow__stitcher(s: Subject) -> str | None:
    """Gradients reach the features; bfloat16 features give bfloat16 tokens."""
    feats = _randn(2, 9, GRID[0] * GRID[1], 8).requires_grad_(True)
    _stitch(s, feats).tokens.sum().backward()
    _expect(feats.grad is not None and bool(feats.grad.abs().sum() > 0), f"{s.label}: no gradient reached the features")
    tokens = _stitch(s, _randn(2, 9, GRID[0] * GRID[1], 8).bfloat16()).tokens
    _expect(tokens.dtype == torch.bfloat16, f"{s.label} returned {tokens.dtype} tokens for bfloat16 features; expected torch.bfloat16")
    return None


# --- tiler ------------------------------------------------------------------


@_check("tiler")
def check_output_shape__tiler(s: Subject) -> str | None:
    """ERP ``[B,3,H,W]`` -> views ``[B,V,3,s,s]`` matching the layout, floats in [0, 1]."""
    tiler = s.make()
    layout = tiler.layout
    _expect(isinstance(layout, TileLayout), f"{s.label}.layout is {type(layout).__name__}; expected TileLayout")
    out = tiler(_randn(2, 3, 128, 256).sigmoid())
    _expect(isinstance(out, I.TiledViews), f"{s.label} returned {type(out).__name__}; expected TiledViews")
    size = layout.views[0].size
    want = [2, layout.num_views, 3, size, size]
    _expect(_shape(out.views) == want, f"{s.label} returned views {_shape(out.views)}; expected {want} for its layout")
    _expect(out.views.is_floating_point() and float(out.views.min()) >= -1e-4 and float(out.views.max()) <= 1 + 1e-4,
            f"{s.label}: views must be floats in [0, 1]; got {out.views.dtype} in [{float(out.views.min()):.3g}, {float(out.views.max()):.3g}]")
    return f"{layout.num_views} views of {size}x{size}"


@_check("tiler")
def check_no_nan_on_constant_input__tiler(s: Subject) -> str | None:
    """A constant grey ERP (float or uint8) gives constant grey views."""
    tiler = s.make()
    for erp, grey in ((torch.full((1, 3, 64, 128), 0.5), 0.5), (torch.full((1, 3, 64, 128), 128, dtype=torch.uint8), 128 / 255)):
        views = tiler(erp).views
        err = float((views.float() - grey).abs().max())
        _expect(_finite(views) and err < 1e-3, f"{s.label}: a constant {erp.dtype} ERP ({grey:.3f}) gave views off by {err:.3g}; expected the same constant")
    return None


@_check("tiler")
def check_batch_independence__tiler(s: Subject) -> str | None:
    """Each panorama's views do not depend on the rest of the batch; tiling is deterministic."""
    tiler = s.make()
    erp = _randn(3, 3, 64, 128).sigmoid()
    full, alone = tiler(erp).views, s.make()(erp[1:2]).views
    ok, diff = _close(full[1:2], alone)
    _expect(ok, f"{s.label}: panorama 1 differs by {diff:.3g} alone vs in a batch")
    return None


# --- metric -----------------------------------------------------------------

_REFS = {
    "img1#q": ["a red car parked on a quiet street", "a red car on the street near houses"],
    "img2#q": ["two dogs run across a green park", "dogs playing in a grassy park"],
    "img3#q": ["a kitchen with a white table and chairs", "white table in a bright kitchen"],
    "img4#q": ["a beach with blue water and palm trees", "palm trees along a sandy beach"],
}


def _available(metric: Any, s: Subject) -> None:
    ok, reason = metric.available()
    if not ok:
        raise CheckSkipped(f"{s.label} unavailable here: {reason}")


def _headline(s: Subject, scores: Any) -> float:
    _expect(isinstance(scores, dict) and scores and all(isinstance(k, str) and isinstance(v, float) for k, v in scores.items()),
            f"{s.label} returned {scores!r}; expected a non-empty dict[str, float]")
    return next(iter(scores.values()))


@_check("metric")
def check_grouped_references(s: Subject) -> str | None:
    """Grouped references: exact match beats unrelated text, reference order does not matter."""
    metric = s.make()
    _available(metric, s)
    good = {k: v[0] for k, v in _REFS.items()}
    bad = {k: "purple quantum violin" for k in _REFS}
    scores = metric.score(good, _REFS)
    s.cache["metric_scores"] = scores
    hi, lo = _headline(s, scores), _headline(s, metric.score(bad, _REFS))
    _expect(math.isfinite(hi) and hi > lo, f"{s.label}: scored {hi:.4g} for predictions equal to a reference and {lo:.4g} for unrelated ones; expected higher for the matches")
    flipped = {k: list(reversed(v)) for k, v in _REFS.items()}
    hi2 = _headline(s, metric.score(good, flipped))
    _expect(abs(hi2 - hi) < 1e-6, f"{s.label}: reversing each reference group changed the score {hi:.6g} -> {hi2:.6g}; expected order independence")
    return f"match {hi:.4g}, unrelated {lo:.4g}"


@_check("metric")
def check_rejects_mismatched_ids(s: Subject) -> str | None:
    """A prediction whose id has no references raises ValueError naming the id."""
    metric = s.make()
    _available(metric, s)
    preds = {k: v[0] for k, v in _REFS.items()} | {"ghost#q": "a ghost"}
    try:
        metric.score(preds, _REFS)
    except ValueError as exc:
        _expect("ghost#q" in str(exc), f"{s.label} raised '{exc}'; expected the message to name the id 'ghost#q'")
        return None
    raise CheckFailure(f"{s.label} scored a prediction id without references; expected ValueError naming 'ghost#q'")


@_check("metric")
def check_determinism__metric(s: Subject) -> str | None:
    """Scoring the same input twice (two instances) gives the same numbers."""
    metric = s.make()
    _available(metric, s)
    good = {k: v[0] for k, v in _REFS.items()}
    a = s.cache.get("metric_scores") or metric.score(good, _REFS)
    b = s.make().score(good, _REFS)
    _expect(a == b, f"{s.label} gave {a} then {b}; expected identical")
    return None


# --- llm --------------------------------------------------------------------


@_check("llm")
def check_vision_token(s: Subject) -> str | None:
    """The tokenizer encodes ``<|vision|>`` as the single id ``vision_token_id``."""
    llm = s.cache.setdefault("llm", s.make())
    ids = llm.tokenizer(llm.vision_token, add_special_tokens=False)["input_ids"]
    _expect(list(ids) == [llm.vision_token_id], f"{s.label}: '{llm.vision_token}' encodes to {list(ids)}; expected [{llm.vision_token_id}]")
    return f"id {llm.vision_token_id}"


@_check("llm")
def check_output_shape__llm(s: Subject) -> str | None:
    """``embed_tokens`` ``[B,L]`` -> ``[B,L,D]``; forward gives logits ``[B,L,V]`` and a finite loss."""
    llm = s.cache.setdefault("llm", s.make())
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    emb = llm.embed_tokens(ids)
    _expect(_shape(emb) == [2, 7, llm.hidden_size], f"{s.label}.embed_tokens returned {_shape(emb)}; expected [2, 7, {llm.hidden_size}]")
    labels = ids.clone()
    labels[:, :3] = -100
    emb = emb.detach().requires_grad_(True)
    out = llm(inputs_embeds=emb, attention_mask=torch.ones_like(ids), labels=labels)
    _expect(out.logits.shape[:2] == (2, 7), f"{s.label} returned logits {_shape(out.logits)}; expected [2, 7, vocab]")
    _expect(out.loss is not None and out.loss.dim() == 0 and _finite(out.loss), f"{s.label}: loss {out.loss}; expected a finite scalar")
    out.loss.backward()
    _expect(emb.grad is not None and _finite(emb.grad), f"{s.label}: no finite gradient reached inputs_embeds")
    return None


@_check("llm")
def check_lora_trainable_only(s: Subject) -> str | None:
    """After ``enable_lora`` only adapter weights are trainable; ``generate`` returns B strings."""
    llm = s.make()
    llm.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in llm.named_parameters() if p.requires_grad]
    _expect(trainable and all("lora" in n for n in trainable), f"{s.label}: trainable after enable_lora: {trainable[:5]}; expected only lora_* weights")
    emb = llm.embed_tokens(torch.tensor([[1, 2, 3]]))
    texts = llm.generate(emb, torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)
    _expect(isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str), f"{s.label}.generate returned {texts!r}; expected a list of 1 string")
    return f"{len(trainable)} LoRA tensors"


# --- running ----------------------------------------------------------------


def make_subject(kind: str, name: str, params: Mapping[str, Any] | None = None) -> Subject:
    """Look the plugin up (``name`` may be ``dist:name``) and pick its small params."""
    spec = REGISTRY.lookup(kind, name)
    subject = Subject(kind, spec, small_params(spec, params))
    spec.validate_params(dict(subject.params))  # bad user params: PluginParamsError now
    return subject


def declared_expected_failures(spec: PluginSpec) -> dict[str, str]:
    """``{check: reason}`` a plugin declares on its params model as
    ``testing_expected_failures: ClassVar[dict[str, str]]`` (e.g. the no-op loss 'none')."""
    return dict(getattr(spec.params_model, "testing_expected_failures", None) or {})


def run_check(subject: Subject, check: Check, expected_failures: Mapping[str, str] | None = None) -> CheckResult:
    """Run one check; never raises (errors become failed results naming the exception).

    ``expected_failures`` (``{check: reason}``) adds to what the plugin declares itself; an
    expected failure that passes is reported as a failure so the list stays honest."""
    start = time.perf_counter()
    xfail = (declared_expected_failures(subject.spec) | dict(expected_failures or {})).get(check.name)
    try:
        note = check.func(subject)
        status, message = ("passed", note or "")
        if xfail:
            status, message = "failed", f"passed but is listed as an expected failure ({xfail}); remove it"
    except CheckSkipped as exc:
        status, message = "skipped", str(exc)
    except CheckFailure as exc:
        status, message = ("xfailed", f"{exc} [expected: {xfail}]") if xfail else ("failed", str(exc))
    except Exception as exc:  # the plugin crashed: report where, not a traceback
        where = f"{subject.label} raised {type(exc).__name__}: {exc}"
        status, message = ("xfailed", where) if xfail else ("failed", where)
    return CheckResult(subject.kind, subject.spec.qualified_name, check.name, status, message, time.perf_counter() - start)


def run_checks(
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    checks: list[str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Run every check of ``kind`` (or only ``checks``) on plugin ``name``."""
    subject = make_subject(kind, name, params)
    selected = [c for c in checks_for(kind) if checks is None or c.name in checks]
    return [run_check(subject, c, expected_failures) for c in selected]


def assert_plugin_passes(kind: str, name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> list[CheckResult]:
    """Run the checks and raise ``CheckFailure`` listing every failure (check: message)."""
    results = run_checks(kind, name, params, **kw)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise CheckFailure("\n".join(f"{r.check}: {r.message}" for r in failed))
    return results


class BoundCheck:
    """One check bound to one plugin; calling it runs the check (pytest-friendly)."""

    def __init__(
        self, kind: str, name: str, check: Check, params: Mapping[str, Any] | None,
        expected_failures: Mapping[str, str] | None, shared: dict[str, Subject] | None = None,
    ) -> None:
        self.kind, self.name, self.check, self.params, self.expected_failures = kind, name, check, params, expected_failures
        self._shared = shared if shared is not None else {}  # one Subject for all checks of a plugin

    def subject(self) -> Subject:
        if "subject" not in self._shared:
            self._shared["subject"] = make_subject(self.kind, self.name, self.params)
        return self._shared["subject"]

    def __repr__(self) -> str:
        return f"{self.check.name}({self.kind}:{self.name})"

    def __call__(self) -> CheckResult:
        import pytest

        result = run_check(self.subject(), self.check, self.expected_failures)
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "xfailed":
            pytest.xfail(result.message)
        if result.status == "failed":
            raise CheckFailure(result.message)
        return result


def parametrize_checks(kind: str, name: str, params: Mapping[str, Any] | None = None, expected_failures: Mapping[str, str] | None = None) -> Any:
    """``pytest.mark.parametrize("check", ...)`` over the checks of one plugin; ids are check names."""
    import pytest

    shared: dict[str, Subject] = {}
    bound = [BoundCheck(kind, name, c, params, expected_failures, shared) for c in checks_for(kind)]
    return pytest.mark.parametrize("check", bound, ids=[b.check.name for b in bound])


__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Subject",
    "assert_plugin_passes",
    "checks_for",
    "make_subject",
    "parametrize_checks",
    "run_check",
    "run_checks",
    "small_params",
    "strip_correspondences",
    "tile_layout",
    "world_features",
]
