"""Checks of the module kinds that map a tensor to patch features: resampler and encoder.

Each check is written once against a ``ModuleDriver`` (how to make an input, run the
module and state the expected output for one kind) and registered per kind with
``functools.partial``; resampler- and encoder-only checks follow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from pathlib import Path
from typing import Any

import torch

from cora_kit.interfaces import Grid
from cora_kit.testing.base import (
    GRID,
    CheckSkipped,
    Subject,
    close,
    expect,
    finite,
    randn,
    register,
    save_load_safetensors,
    shape,
)


@dataclass(frozen=True)
class ModuleDriver:
    """How the shared checks drive one kind: ``make_input(s, batch, fill, seed) -> (x, grid)``,
    ``run(module, x, grid) -> y`` and ``expected(module, x, grid) -> (shape, why)``."""

    kind: str
    make_input: Callable[[Subject, int, float | None, int], tuple[torch.Tensor, Grid]]
    run: Callable[[Any, torch.Tensor, Grid], torch.Tensor]
    expected: Callable[[Any, torch.Tensor, Grid], tuple[list[int], str]]


def _resampler_input(s: Subject, batch: int, fill: float | None, seed: int) -> tuple[torch.Tensor, Grid]:
    """``[N,P,Din]`` on the seed's 16x16 grid."""
    dims = (batch, GRID[0] * GRID[1], s.spec.validate_params(dict(s.params)).get("in_dim", 32))
    return (torch.full(dims, fill) if fill is not None else randn(*dims, seed=seed)), GRID


def _resampler_expected(module: Any, x: torch.Tensor, grid: Grid) -> tuple[list[int], str]:
    g = tuple(module.output_grid(grid))
    return [x.shape[0], g[0] * g[1], module.out_dim], f"declared grid {g}"


def _encoder_input(s: Subject, batch: int, fill: float | None, seed: int) -> tuple[torch.Tensor, Grid]:
    """Pixels ``[N,3,s,s]`` in [0, 1] at the encoder's image size."""
    enc = s.shared("encoder")
    dims = (batch, 3, enc.image_size, enc.image_size)
    x = torch.full(dims, fill) if fill is not None else randn(*dims, seed=seed).sigmoid()
    return x, tuple(enc.grid)  # type: ignore[return-value]


def _encoder_expected(module: Any, x: torch.Tensor, grid: Grid) -> tuple[list[int], str]:
    return ([x.shape[0], module.grid[0] * module.grid[1], module.hidden_size],
            f"grid {tuple(module.grid)}, hidden_size {module.hidden_size}")


RESAMPLER = ModuleDriver("resampler", _resampler_input, lambda m, x, g: m(x, g), _resampler_expected)
ENCODER = ModuleDriver("encoder", _encoder_input, lambda m, x, g: m(x), _encoder_expected)


def _inputs(s: Subject, d: ModuleDriver, batch: int = 2, fill: float | None = None, seed: int = 0) -> tuple[torch.Tensor, Grid]:
    return d.make_input(s, batch, fill, seed)


# --- shared checks ---------------------------------------------------------------------


def check_output_shape(s: Subject, d: ModuleDriver) -> str | None:
    """Output ``[N,P',D]`` matches the declared grid and output width."""
    module = s.make()
    x, grid = _inputs(s, d)
    with torch.no_grad():
        y = d.run(module, x, grid)
    want, why = d.expected(module, x, grid)
    expect(isinstance(y, torch.Tensor), f"{s.label} returned {type(y).__name__}; expected a tensor {want}")
    expect(shape(y) == want, f"{s.label} returned {shape(y)}; expected {want} for {why}")
    return f"{shape(x)} -> {shape(y)}"


def check_dtype_float32_bf16(s: Subject, d: ModuleDriver) -> str | None:
    """float32 in -> float32 out; a bfloat16 model on bfloat16 input -> finite bfloat16 out."""
    module = s.make()
    x, grid = _inputs(s, d)
    with torch.no_grad():
        y = d.run(module, x, grid)
        expect(y.dtype == torch.float32, f"{s.label} returned {y.dtype} for float32 input; expected torch.float32")
        module = module.to(torch.bfloat16)
        yb = d.run(module, x.bfloat16(), grid)
    expect(yb.dtype == torch.bfloat16, f"{s.label} returned {yb.dtype} for a bfloat16 model and input; expected torch.bfloat16")
    expect(finite(yb), f"{s.label} returned NaN/Inf in bfloat16")
    return None


def check_batch_independence(s: Subject, d: ModuleDriver) -> str | None:
    """In eval mode each sample's output does not depend on the others in the batch."""
    module = s.make()
    x, grid = _inputs(s, d, batch=3)
    with torch.no_grad():
        full = d.run(module, x, grid)
        alone = d.run(module, x[1:2], grid)
    ok, diff = close(full[1:2], alone)
    expect(ok, f"{s.label}: sample 1 differs by {diff:.3g} when run alone vs in a batch of 3; expected no"
           " cross-sample mixing (batch statistics in eval mode?)")
    return f"max diff {diff:.2g}"


def check_determinism_with_seed(s: Subject, d: ModuleDriver) -> str | None:
    """Same seed -> same weights and the same train-mode output (dropout included)."""
    outs = []
    for _ in range(2):
        module = s.make(seed=123).train()
        x, grid = _inputs(s, d)
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(d.run(module, x, grid))
    ok, diff = close(outs[0], outs[1], atol=0.0, rtol=0.0)
    expect(ok, f"{s.label}: two builds with seed 123 gave outputs differing by {diff:.3g}; expected identical"
           " (use torch's RNG, not an unseeded one)")
    return None


def check_gradients_flow(s: Subject, d: ModuleDriver) -> str | None:
    """A loss on the output gives finite gradients to the input and every trainable parameter."""
    module = s.make().train()
    x, grid = _inputs(s, d)
    x.requires_grad_(True)
    torch.manual_seed(0)
    y = d.run(module, x, grid)
    (y * randn(*y.shape, seed=1)).sum().backward()
    expect(x.grad is not None and finite(x.grad) and bool(x.grad.abs().sum() > 0),
           f"{s.label}: the input got {'no' if x.grad is None else 'a zero or non-finite'} gradient;"
           " expected the output to depend differentiably on the input")
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    dead = [n for n, p in params if p.grad is None]
    bad = [n for n, p in params if p.grad is not None and not finite(p.grad)]
    expect(not dead, f"{s.label}: trainable parameters got no gradient: {dead[:5]}; expected all to be used"
           " (or set requires_grad=False)")
    expect(not bad, f"{s.label}: non-finite gradients in {bad[:5]}")
    return f"{len(params)} trainable tensors"


def _input_and_param_grads(s: Subject, d: ModuleDriver, module: Any) -> dict[str, torch.Tensor]:
    x, grid = _inputs(s, d)
    x.requires_grad_(True)
    torch.manual_seed(0)  # the same dropout masks in both passes
    y = d.run(module, x, grid)
    (y * randn(*y.shape, seed=1)).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return {"<input>": x.grad.clone(), **grads}


def check_gradient_checkpointing(s: Subject, d: ModuleDriver) -> str | None:
    """``set_gradient_checkpointing(True)`` (``model.gradient_checkpointing``) keeps the
    gradients (input and parameters) and ``set_gradient_checkpointing(False)`` restores the
    module; ``""`` means not supported (the pipeline reports it: skipped here)."""
    module = s.make().train()
    before = _input_and_param_grads(s, d, module)
    how = module.set_gradient_checkpointing(True)
    if not how:
        raise CheckSkipped("set_gradient_checkpointing returns '': not supported (model.gradient_checkpointing reports it)")
    expect(isinstance(how, str), f"{s.label}.set_gradient_checkpointing(True) returned {how!r}; expected a description")
    module.train()
    after = _input_and_param_grads(s, d, module)
    expect(after.keys() == before.keys(), f"{s.label}: with checkpointing, gradients reach {sorted(after)[:5]}; without, {sorted(before)[:5]}")
    worst = max(close(after[k], before[k], atol=1e-5, rtol=1e-4)[1] for k in before)
    expect(all(close(after[k], before[k], atol=1e-5, rtol=1e-4)[0] for k in before),
           f"{s.label}: gradients differ by {worst:.3g} with gradient checkpointing; expected the same gradients")
    module.set_gradient_checkpointing(False)
    return how


def check_state_dict_roundtrip_safetensors(s: Subject, d: ModuleDriver) -> str | None:
    """Weights saved with safetensors and loaded into a fresh instance reproduce the output."""
    a, b = s.make(seed=0), s.make(seed=1)
    if not a.state_dict():
        return "no state to save"
    n = save_load_safetensors(a, b)
    x, grid = _inputs(s, d)
    with torch.no_grad():
        ya, yb = d.run(a, x, grid), d.run(b, x, grid)
    ok, diff = close(ya, yb, atol=0.0, rtol=0.0)
    expect(ok, f"{s.label}: output differs by {diff:.3g} after a safetensors round trip; expected identical"
           " (state not in state_dict?)")
    return f"{n} tensors"


def check_no_nan_on_constant_input(s: Subject, d: ModuleDriver) -> str | None:
    """Constant input (zeros, 0.5) gives a finite output (no division by a zero std)."""
    module = s.make()
    for fill in (0.0, 0.5):
        x, grid = _inputs(s, d, fill=fill)
        with torch.no_grad():
            y = d.run(module, x, grid)
        expect(finite(y), f"{s.label} returned NaN/Inf for a constant input (all {fill}) {shape(x)};"
               " expected finite values (add eps to normalisations)")
    return None


# --- one kind only -----------------------------------------------------------------------


def check_declared_grid(s: Subject) -> str | None:
    """``output_grid`` returns two positive ints and the token count follows it for another grid."""
    module = s.make()
    for grid in (GRID, (8, 8)):
        g = module.output_grid(grid)
        expect(isinstance(g, tuple) and len(g) == 2 and all(isinstance(v, int) and v > 0 for v in g),
               f"{s.label}.output_grid({grid}) returned {g!r}; expected a tuple of two positive ints")
    x = randn(2, 64, module.in_dim)
    with torch.no_grad():
        y = module(x, (8, 8))
    want = [2, g[0] * g[1], module.out_dim]
    expect(shape(y) == want, f"{s.label} returned {shape(y)}; expected {want} for declared grid {g} (input grid (8, 8))")
    return f"(16, 16) -> {module.output_grid(GRID)}, (8, 8) -> {g}"


def check_frozen_split(s: Subject) -> str | None:
    """``forward(x) == forward_trainable(forward_frozen(x, k), k)`` and the block parameters exist."""
    enc = s.make()
    x, _ = _inputs(s, ENCODER)
    with torch.no_grad():
        ref = enc(x)
        for k in sorted({0, 1, enc.num_blocks}):
            ok, diff = close(enc.forward_trainable(enc.forward_frozen(x, k), k), ref)
            expect(ok, f"{s.label}: forward_trainable(forward_frozen(x, {k}), {k}) differs from forward(x) by {diff:.3g}")
    ids = {id(p) for p in enc.parameters()}
    block = enc.trainable_block_parameters(1)
    expect(len(block) > 0 and all(id(p) in ids for p in block),
           f"{s.label}.trainable_block_parameters(1) returned {len(block)} tensors; expected the last block's parameters")
    return f"{enc.num_blocks} blocks"


def check_save_pretrained(s: Subject) -> str | None:
    """``save_pretrained`` (export) writes safetensors the factory loads back with
    ``pretrained=folder`` to the same outputs; ``None`` means no own format (skipped)."""
    enc = s.make()
    x, _ = _inputs(s, ENCODER)
    with tempfile.TemporaryDirectory() as tmp:
        files = enc.save_pretrained(Path(tmp))
        if files is None:
            raise CheckSkipped("save_pretrained returns None: export stores the state dict and rebuilds from the config")
        written = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())
        expect(bool(files) and all(f in written and f.endswith(".safetensors") for f in files),
               f"{s.label}.save_pretrained returned {files!r}; expected the .safetensors files it wrote (wrote {written})")
        params = {**s.params, "pretrained": tmp, "random_init": False, "arch": {}}
        again = s.spec.factory(**s.spec.validate_params(params)).eval()
        with torch.no_grad():
            ok, diff = close(again(x), enc(x))
    expect(ok, f"{s.label} rebuilt from save_pretrained's folder differs by {diff:.3g}; expected the same encoder")
    notes = enc.summary_notes()
    expect(isinstance(notes, list) and all(isinstance(n, str) for n in notes), f"{s.label}.summary_notes() returned {notes!r}; expected list[str]")
    return f"{len(files)} weight file(s)"


def _bind(func: Callable[..., str | None], driver: ModuleDriver) -> Callable[[Subject], str | None]:
    bound = partial(func, d=driver)
    update_wrapper(bound, func)
    return bound


_SHARED = (check_dtype_float32_bf16, check_batch_independence, check_determinism_with_seed,
           check_gradients_flow, check_gradient_checkpointing, check_state_dict_roundtrip_safetensors,
           check_no_nan_on_constant_input)
register(_bind(check_output_shape, RESAMPLER), ["resampler"])
register(check_declared_grid, ["resampler"])
for _func in _SHARED:
    register(_bind(_func, RESAMPLER), ["resampler"])
for _func in (check_output_shape, *_SHARED):
    register(_bind(_func, ENCODER), ["encoder"])
register(check_frozen_split, ["encoder"])
register(check_save_pretrained, ["encoder"])
