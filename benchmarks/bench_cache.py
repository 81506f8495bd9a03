"""Bench feature cache: a 2x2x1 grid with the shared frozen-encoder cache vs per-cell caches.

    python benchmarks/bench_cache.py [--quick] [--size HxW]

Both grids run the same cells (mlp, bimamba) x (none, densecl) x 1 seed on the tiny preset
with the same synthetic data, in this process; the per-cell grid gives every cell its own
empty cache (what a grid without a shared cache pays). For a fair wall-clock comparison on
a machine other processes load:

- one untimed warm-up cell runs first (imports, first model build, the Java tokenizer,
  disk caches): whichever grid ran first used to pay them - the old version of this script
  always timed the shared grid first and measured 0.76-0.84x on a loaded machine, 1.74x
  with the order swapped;
- the cells are interleaved in ABBA order (shared, per-cell, per-cell, shared, ...) so a
  change of load hits both grids alike.

Reported: wall ratio (per-cell / shared, the ``speedup``), CPU-time ratio (this process +
its children, e.g. Java: robust to load), encoder image passes, cache hits, and the load
average before and after. Last line: {"bench": "bench_cache", "speedup": s,
"encoder_image_passes_cached": a, "encoder_image_passes_uncached": b, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (< 2 minutes on a quiet machine)")
    ap.add_argument("--size", default="128x256", help="synthetic panorama size HxW (default 128x256)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from cora_kit.bench.grid import build_grid
    from cora_kit.bench.merge import load_cell_records
    from cora_kit.bench.runner import BenchSpec, run_grid
    from cora_kit.data.synth import ensure_synthetic

    h, w = (int(v) for v in args.size.lower().split("x"))
    n_train, steps = (24, 2) if args.quick else (96, 8)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        ensure_synthetic(data, n_train=n_train, n_val=4, n_test=8, size=(h, w), seed=0)
        overrides = [f"stages.stage{k}.max_steps={steps}" for k in (1, 2, 3)] + ["eval.metrics=[cider]"]
        cells = build_grid(["mlp", "bimamba"], ["none", "densecl"], 1)

        def spec(cell_list: list, shared: bool) -> BenchSpec:
            return BenchSpec(cells=cell_list, preset="tiny", data=str(data), overrides=overrides, use_shared_cache=shared)

        t0 = time.perf_counter()
        run_grid(spec(cells[:1], False), root / "warm-up")
        warmup = time.perf_counter() - t0
        wall = {True: 0.0, False: 0.0}
        cpu = {True: 0.0, False: 0.0}
        for k, cell in enumerate(cells):
            for shared in ((True, False) if k % 2 == 0 else (False, True)):
                t0, c0 = time.perf_counter(), cpu_seconds()
                progress = run_grid(spec([cell], shared), root / ("shared" if shared else "per-cell"))
                wall[shared] += time.perf_counter() - t0
                cpu[shared] += cpu_seconds() - c0
                if progress.failed:
                    raise SystemExit(f"cell {cell.cell_id} failed (shared={shared}): see {root}")
        passes = {s: sum(r["encoder_image_passes"] for r in load_cell_records(root / n)) for s, n in
                  ((True, "shared"), (False, "per-cell"))}
        hits = {s: sum(r["cache_hits"] for r in load_cell_records(root / n)) for s, n in
                ((True, "shared"), (False, "per-cell"))}
    load_after = os.getloadavg()
    print(f"2x2x1 grid, tiny preset, {n_train} train images {h}x{w}, {steps} steps per stage; cells interleaved "
          f"ABBA after a {warmup:.0f} s warm-up cell; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"{'grid':<16}{'wall s':>10}{'CPU s':>10}{'encoder image passes':>24}{'cache hits':>12}")
    for shared, label in ((True, "shared cache"), (False, "per-cell cache")):
        print(f"{label:<16}{wall[shared]:>10.1f}{cpu[shared]:>10.1f}{passes[shared]:>24}{hits[shared]:>12}")
    speedup, cpu_speedup = wall[False] / wall[True], cpu[False] / cpu[True]
    print(f"speedup (per-cell / shared): wall {speedup:.2f}x, CPU {cpu_speedup:.2f}x")
    print(json.dumps({"bench": "bench_cache", "speedup": round(speedup, 3),
                      "encoder_image_passes_cached": passes[True], "encoder_image_passes_uncached": passes[False],
                      "cpu_speedup": round(cpu_speedup, 3), "cache_hits_cached": hits[True],
                      "image_size": [h, w], "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)]}))


if __name__ == "__main__":
    main()
