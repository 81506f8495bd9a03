"""Benchmark: overlap losses (forward + backward) vs lightly on the equivalent pairs.

Seed shape: B=8 panoramas, 8 tiles, 256 tokens (16x16), D=1024; seed-strip
correspondences (8 pairs x 64 matches) by default, ``--mode geometric`` for the exact ones.
cora-kit's time includes gathering the matched pairs from ``[B,V,P,D]``; lightly gets
the pairs already gathered (flattened, or one call per (panorama, pair) group where
cora-kit's statistics or negatives are per group). Ratio = cora-kit time / lightly time
(below 1: cora-kit is faster). lightly is loaded from its files (tests/lightly_peer.py).

    python benchmarks/losses.py [--quick] [--mode seed-strip|geometric]

Timings taken while other processes load the CPU are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import cora_kit
from cora_kit import geometry
from cora_kit.overlap import group_by_pair, matched_features, pair_sizes

ROOT = Path(__file__).resolve().parents[1]
GRID = (16, 16)


def _lightly():
    spec = importlib.util.spec_from_file_location("lightly_peer", ROOT / "tests" / "lightly_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_lightly_losses()


def _time(fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor], reps: int) -> float:
    """Median seconds of ``fn().backward()`` over ``reps`` runs (after one warm-up)."""
    times = []
    for i in range(reps + 1):
        for t in leaves:
            t.grad = None
        start = time.perf_counter()
        fn().backward()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under ~2 minutes)")
    parser.add_argument("--mode", default="seed-strip", choices=["seed-strip", "geometric"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 7
    torch.manual_seed(0)
    peer = _lightly()

    layout = cora_kit.create("tiler", "e2p").layout
    corr = geometry.overlap_correspondences(layout, GRID, mode=args.mode)
    b, v, d = args.batch, len(corr.view_indices), args.dim
    z1 = torch.randn(b, v, 256, d, requires_grad=True)
    z2 = (z1.detach() + 0.1 * torch.randn_like(z1)).requires_grad_()
    with torch.no_grad():
        src, dst = matched_features(z1, corr, GRID)
        _, dst2 = matched_features(z2, corr, GRID)
    sizes = pair_sizes(corr)
    fa, fb = src.reshape(-1, d).clone().requires_grad_(), dst.reshape(-1, d).clone().requires_grad_()
    fb2 = dst2.reshape(-1, d).clone().requires_grad_()
    tiles1 = z1.detach().reshape(b * v, 256, d).clone().requires_grad_()
    tiles2 = z2.detach().reshape(b * v, 256, d).clone().requires_grad_()
    vic, ntx, ntx_tile = peer.VICRegLoss(), peer.NTXentLoss(temperature=0.07), peer.NTXentLoss(temperature=0.2)

    def groups_of(x: torch.Tensor) -> list[torch.Tensor]:
        return list(group_by_pair(x.reshape(src.shape), sizes)[0])

    def per_group(fn, xs, ys):
        return torch.stack([fn(x, y) for x, y in zip(xs, ys)]).mean()

    ours = {
        "vicreg-batchwise": (cora_kit.create("loss", "vicreg", variant="batchwise"), {}),
        "vicreg-pairwise": (cora_kit.create("loss", "vicreg", variant="pairwise"), {}),
        "infonce": (cora_kit.create("loss", "infonce"), {"second_view": z2}),
        "densecl": (cora_kit.create("loss", "densecl"), {}),
        "none": (cora_kit.create("loss", "none"), {}),
    }
    peers: dict[str, tuple[str, Callable[[], torch.Tensor], list[torch.Tensor]]] = {
        "vicreg-batchwise": ("VICRegLoss, flattened pairs", lambda: vic(fa, fb), [fa, fb]),
        "vicreg-pairwise": (
            "VICRegLoss per (panorama, pair)",
            lambda: per_group(vic, groups_of(fa), groups_of(fb)),
            [fa, fb],
        ),
        "infonce": (
            "NTXentLoss per pair + 0.1 x per tile",
            lambda: per_group(ntx, groups_of(fa), groups_of(fb2))
            + 0.1 * per_group(ntx_tile, list(tiles1), list(tiles2)),
            [fa, fb2, tiles1, tiles2],
        ),
        "densecl": ("NTXentLoss per (panorama, pair)", lambda: per_group(ntx, groups_of(fa), groups_of(fb)), [fa, fb]),
        "none": ("VICRegLoss, flattened pairs", lambda: vic(fa, fb), [fa, fb]),
    }
    try:
        ours["barlow"] = (cora_kit.create("loss", "barlow"), {})
        peers["barlow"] = ("BarlowTwinsLoss, flattened pairs", lambda: peer.BarlowTwinsLoss()(fa, fb), [fa, fb])
    except cora_kit.UnknownPluginError:
        pass  # the example distribution is not installed

    rows, ratios, ms = [], {}, {}
    for name, (loss_fn, extra) in ours.items():
        t_ours = _time(lambda: loss_fn(z1, corr, GRID, **extra)[0], [z1, z2], reps)
        label, peer_fn, leaves = peers[name]
        t_peer = _time(peer_fn, leaves, reps)
        ratios[name] = round(t_ours / t_peer, 3)
        ms[name] = {"cora_kit": round(t_ours * 1e3, 2), "lightly": round(t_peer * 1e3, 2)}
        rows.append((name, t_ours * 1e3, label, t_peer * 1e3, t_ours / t_peer))

    print(f"overlap losses, forward+backward, B={b} V={v} P=256 D={d}, {args.mode} "
          f"({sum(sizes)} matches/panorama, {len(sizes)} pairs), median of {reps}, "
          f"torch {torch.__version__} threads={torch.get_num_threads()}, lightly {peer.version}")
    print(f"{'loss':<17} {'cora-kit ms':>11}  {'lightly peer':<38} {'peer ms':>9}  {'ratio':>6}")
    for name, a, label, p, r in rows:
        print(f"{name:<17} {a:>11.1f}  {label:<38} {p:>9.1f}  {r:>6.2f}")
    print("(ratio = cora-kit / lightly; cora-kit includes gathering the pairs; CPU timings are noisy under load)")
    print(json.dumps({
        "bench": "losses",
        "peer": f"lightly {peer.version}",
        "shape": {"B": b, "V": v, "P": 256, "D": d, "mode": args.mode, "matches": sum(sizes)},
        "ratios": ratios,
        "ms": ms,
        "quick": args.quick,
    }))


if __name__ == "__main__":
    sys.exit(main())
