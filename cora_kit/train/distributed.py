"""torchrun / DDP: process group setup (NCCL on GPUs, gloo on CPU) and small helpers.

``torchrun --nproc-per-node N -m cora_kit run ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them everything here is a no-op (one process). The device of a
rank comes from ``cora_kit.device.resolve_device(name, local_rank)``.

What N processes keep equal to one (``cora_kit.train.engine`` uses these):

* the effective batch: ``split_for_world`` divides a stage's accumulation (else its
  micro-batch) by N, and refuses a batch that does not split;
* the data order: one seeded permutation, strided over ranks (``stages.epoch_order``);
* random streams differ per rank (``rank_seed``): dropout and augmentation masks are not
  copies of each other; rank 0 keeps the one-process seed;
* ``--batch-size auto``: every rank searches, all take the smallest (``all_reduce_min``);
* evaluation: each rank captions its shard, rank 0 gathers (``gather_to_main``);
* the process group gets ``distributed.timeout_s`` and is destroyed at the end of a run
  that created it (``teardown``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from cora_kit.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: True when ``setup`` created the process group (``teardown`` then destroys it)
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str, timeout_s: float | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment (idempotent: a group that
    already exists is used, and left alone by ``teardown``). ``timeout_s`` bounds every
    collective: a rank that waits longer for the others fails instead of hanging."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group(backend=backend, **kwargs)
        owns = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, owns_group=owns)


def teardown(info: DistInfo) -> None:
    """Destroy the process group this run created (after a last barrier)."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The random seed of ``rank``: ``seed`` itself on rank 0 (one process reproduces its
    numbers), a distinct stream derived from ``(seed, rank)`` elsewhere."""
    if rank == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}|{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63 - 1)


def split_for_world(batch_size: int, grad_accum: int, world_size: int, where: str = "") -> tuple[int, int]:
    """``(micro-batch, accumulation)`` per rank that keep the configured effective batch
    ``batch_size * grad_accum`` over ``world_size`` processes: the accumulation is divided
    when it can be; otherwise the micro-batch shrinks (the largest one <= ``batch_size``
    that splits the effective batch). An effective batch that is not a multiple of the
    world size is a ``ConfigError`` naming the stage."""
    if world_size <= 1:
        return batch_size, grad_accum
    effective = batch_size * grad_accum
    if grad_accum % world_size == 0:
        return batch_size, grad_accum // world_size
    if effective % world_size:
        raise ConfigError(
            f"{where}effective batch {batch_size} x {grad_accum} = {effective} cannot be split over {world_size}"
            f" processes; make batch_size x grad_accum a multiple of {world_size}"
        )
    per_rank = effective // world_size
    micro = max(b for b in range(1, min(batch_size, per_rank) + 1) if per_rank % b == 0)
    return micro, per_rank // micro


def all_reduce_min(value: int, info: DistInfo, device: torch.device | str = "cpu") -> int:
    """The smallest ``value`` over ranks, on every rank."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """``values`` averaged over ranks (a key some rank lacks is averaged over those that
    have it), for logging the whole effective batch rather than rank 0's share."""
    if not info.enabled or not dist.is_initialized():
        return values
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, values)
    keys = list(dict.fromkeys(k for p in parts for k in p))
    return {k: sum(p[k] for p in parts if k in p) / sum(1 for p in parts if k in p) for k in keys}


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None elsewhere."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out if info.is_main else None


def shard(items: Any, info: DistInfo) -> Any:
    """This rank's share of ``items`` (strided: ``items[rank::world]``)."""
    return items[info.rank :: info.world_size] if info.enabled else items


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, info: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on one (e.g. a non-finite loss)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


__all__ = ["DistInfo", "all_reduce_min", "any_rank", "barrier", "gather_to_main", "mean_over_ranks", "rank_seed", "setup", "shard",
           "split_for_world", "teardown"]
