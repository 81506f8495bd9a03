"""Batch-size search (``--batch-size auto``) that never changes the effective batch.

The effective batch of a stage is ``batch_size * grad_accum * world_size`` as configured.
``auto`` only chooses how it is split: the largest per-device micro-batch that fits (CUDA:
forward+backward trials with doubling then bisection, and a safety margin; CPU: a stated
rule on available RAM) that divides the effective batch, with the accumulation steps making
up the rest. The choice is printed and recorded in the run's config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cora_kit.errors import ConfigError

#: fraction of the largest fitting batch that is used (activations vary between steps)
SAFETY_MARGIN = 0.85
#: CPU rule: use at most this fraction of the RAM available when the search starts
CPU_RAM_FRACTION = 0.5


@dataclass(frozen=True)
class BatchPlan:
    """Per-device micro-batch and accumulation; ``effective`` is unchanged by construction."""

    micro_batch: int
    grad_accum: int
    world_size: int
    found: int
    rule: str

    @property
    def effective(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/CPU allocation failures (``torch.OutOfMemoryError`` and its message forms)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError | MemoryError) and (
        "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate memory" in text
    )


def largest_fitting_batch(
    try_step: Callable[[int], None],
    upper: int,
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
    on_oom: Callable[[], None] | None = None,
) -> int:
    """Largest b in [1, upper] for which ``try_step(b)`` (forward+backward) does not run out
    of memory: double from 1, then bisect between the last fit and the first failure.

    Raises ``ConfigError`` if even batch 1 does not fit; other exceptions propagate.
    """
    if upper < 1:
        raise ConfigError(f"batch search needs an upper bound >= 1; got {upper}")

    def fits(b: int) -> bool:
        try:
            try_step(b)
            return True
        except BaseException as exc:
            if not is_oom(exc):
                raise
            if on_oom is not None:
                on_oom()
            return False

    if not fits(1):
        raise ConfigError("batch size search: even a batch of 1 does not fit in memory")
    good, bad = 1, None
    while good < upper:
        trial = min(good * 2, upper)
        if fits(trial):
            good = trial
        else:
            bad = trial
            break
    if bad is None:
        return good
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def plan_split(effective_per_device: int, limit: int, world_size: int, found: int, rule: str) -> BatchPlan:
    """Largest divisor of ``effective_per_device`` not above ``limit`` as micro-batch."""
    if effective_per_device < 1:
        raise ConfigError(f"effective batch per device must be >= 1; got {effective_per_device}")
    limit = max(1, min(limit, effective_per_device))
    micro = max(d for d in range(1, limit + 1) if effective_per_device % d == 0)
    return BatchPlan(micro, effective_per_device // micro, world_size, found, rule)


def plan_from_search(
    batch_size: int,
    grad_accum: int,
    world_size: int,
    try_step: Callable[[int], None],
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
    on_oom: Callable[[], None] | None = None,
    margin: float = SAFETY_MARGIN,
) -> BatchPlan:
    """CUDA path: search the largest fitting micro-batch, keep ``margin``, keep the
    configured effective batch ``batch_size * grad_accum * world_size``."""
    per_device = batch_size * grad_accum
    found = largest_fitting_batch(try_step, per_device, is_oom, on_oom)
    limit = max(1, math.floor(found * margin)) if found < per_device else found
    rule = f"largest fitting micro-batch {found}, x{margin} margin" if found < per_device else (
        f"the whole per-device batch {found} fits"
    )
    return plan_split(per_device, limit, world_size, found, rule)


def plan_from_ram(
    batch_size: int,
    grad_accum: int,
    world_size: int,
    bytes_per_sample: float,
    available_bytes: float,
    fraction: float = CPU_RAM_FRACTION,
) -> BatchPlan:
    """CPU rule: micro-batch = floor(fraction * available RAM / measured bytes per sample)."""
    if bytes_per_sample <= 0:
        raise ConfigError(f"bytes per sample must be positive; got {bytes_per_sample}")
    per_device = batch_size * grad_accum
    limit = max(1, int(fraction * available_bytes // bytes_per_sample))
    rule = (
        f"CPU: {fraction:.0%} of {available_bytes / 2**30:.1f} GiB available RAM / "
        f"{bytes_per_sample / 2**20:.1f} MiB per sample = {limit}"
    )
    return plan_split(per_device, limit, world_size, limit, rule)


def saved_activation_bytes(step: Callable[[], Any], exclude: Iterable[Any] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``step()`` (one
    forward), less those of ``exclude``: pass the model's parameters, which autograd saves
    too (a frozen weight is kept for the input's gradient) but which do not grow with the
    batch. Device-independent: model-summary's activation coefficients are checked with it."""
    import torch

    total = 0
    seen: set[int] = {t.untyped_storage().data_ptr() for t in exclude if t.device.type != "meta"}

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def search_stage_batch(
    step: Callable[[int], Any],
    batch_size: int,
    grad_accum: int,
    world_size: int,
    device_type: str,
    available_bytes: float | None = None,
    exclude: Iterable[Any] = (),
) -> BatchPlan:
    """The split of one stage's effective batch for ``--batch-size auto``.

    ``batch_size`` x ``grad_accum`` is what one device processes per optimizer step (under
    DDP: the per-rank share of the configured effective batch). ``step(b)`` runs
    forward+backward of the stage's step on a synthetic micro-batch of ``b`` (and returns
    the loss). CUDA: trials with doubling + bisection (OOM caught, cache emptied),
    ``SAFETY_MARGIN``. CPU: the stated RAM rule with bytes per sample = 2 x the activation
    bytes autograd saves for one sample (gradients and temporaries), less ``exclude`` (the
    model's parameters, which autograd saves too but which do not grow with the batch).
    """
    import torch

    if device_type == "cuda":
        return plan_from_search(batch_size, grad_accum, world_size, step, on_oom=torch.cuda.empty_cache)
    if available_bytes is None:
        import psutil

        available_bytes = float(psutil.virtual_memory().available)
    per_sample = 2.0 * saved_activation_bytes(lambda: step(1), exclude)
    return plan_from_ram(batch_size, grad_accum, world_size, max(per_sample, 1.0), available_bytes)
