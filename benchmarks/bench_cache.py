"""Bench feature cache: a 2x2x1 grid with the shared frozen-encoder cache vs per-cell caches.

    python benchmarks/bench_cache.py [--quick] [--size HxW]

Both grids run the same cells (mlp, bimamba) x (none, densecl) x 1 seed on the tiny preset
with the same synthetic data; the per-cell grid gives every cell its own empty cache (what a
grid without a shared cache pays). The two grids run **at the same time**, each in its own
process with one torch thread, after each has run one untimed warm-up cell (imports, first
model build, the Java tokenizer) and both have said they are ready: on a machine that other
processes load, both grids then get the same share of it, and the wall ratio follows the work
each does instead of when each ran. (The first version timed the shared grid first, in one
process, and it paid the one-time costs: 0.76-0.84x under load, 1.74x with the order swapped.)

Reported per grid: wall and CPU seconds (process + children, e.g. Java), encoder image
passes, cache hits; the load average before and after. Last line: {"bench": "bench_cache",
"speedup": s (wall, per-cell / shared), "encoder_image_passes_cached": a,
"encoder_image_passes_uncached": b, "cpu_speedup": c, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRIDS = ("shared", "per-cell")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_one(grid: str, root: Path, steps: int) -> None:
    """Child process: warm up, say ready, wait for go, run the grid, write its numbers."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from cora_kit.bench.grid import build_grid
    from cora_kit.bench.merge import load_cell_records
    from cora_kit.bench.runner import BenchSpec, run_grid

    overrides = [f"stages.stage{k}.max_steps={steps}" for k in (1, 2, 3)] + ["eval.metrics=[cider]"]
    cells = build_grid(["mlp", "bimamba"], ["none", "densecl"], 1)
    shared = grid == "shared"

    def spec(cell_list: list) -> BenchSpec:
        return BenchSpec(cells=cell_list, preset="tiny", data=str(root / "data"), overrides=overrides,
                         use_shared_cache=shared)

    run_grid(spec(cells[:1]), root / f"warm-up-{grid}")
    (root / f"ready-{grid}").touch()
    while not (root / "go").exists():
        time.sleep(0.05)
    t0, c0 = time.perf_counter(), cpu_seconds()
    progress = run_grid(spec(cells), root / grid)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if progress.failed:
        raise SystemExit(f"{grid}: cells failed: {progress.failed}")
    records = load_cell_records(root / grid)
    result = {"wall": wall, "cpu": cpu, "passes": sum(r["encoder_image_passes"] for r in records),
              "hits": sum(r["cache_hits"] for r in records)}
    (root / f"result-{grid}.json").write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (< 2 minutes on a quiet machine)")
    ap.add_argument("--size", default="128x256", help="synthetic panorama size HxW (default 128x256)")
    ap.add_argument("--child", choices=GRIDS, help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n_train, steps = (24, 2) if args.quick else (96, 8)
    if args.child:
        run_one(args.child, Path(args.root), steps)
        return
    from cora_kit.data.synth import ensure_synthetic

    h, w = (int(v) for v in args.size.lower().split("x"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ensure_synthetic(root / "data", n_train=n_train, n_val=4, n_test=8, size=(h, w), seed=0)
        base = [sys.executable, __file__, "--root", str(root)] + (["--quick"] if args.quick else [])
        log = open(root / "children.log", "w")
        procs = {g: subprocess.Popen(base + ["--child", g], stdout=log, stderr=subprocess.STDOUT) for g in GRIDS}
        while not all((root / f"ready-{g}").exists() for g in GRIDS):
            if any(p.poll() not in (None, 0) for p in procs.values()):
                log.close()
                raise SystemExit("a grid failed before it started:\n" + (root / "children.log").read_text()[-3000:])
            time.sleep(0.05)
        (root / "go").touch()
        for g, p in procs.items():
            if p.wait() != 0:
                log.close()
                raise SystemExit(f"grid {g} failed:\n" + (root / "children.log").read_text()[-3000:])
        log.close()
        res = {g: json.loads((root / f"result-{g}.json").read_text()) for g in GRIDS}
    load_after = os.getloadavg()
    print(f"2x2x1 grid, tiny preset, {n_train} train images {h}x{w}, {steps} steps per stage; the two grids run "
          f"at the same time (one process and one torch thread each, after a warm-up cell each); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"{'grid':<16}{'wall s':>10}{'CPU s':>10}{'encoder image passes':>24}{'cache hits':>12}")
    for g, label in (("shared", "shared cache"), ("per-cell", "per-cell cache")):
        r = res[g]
        print(f"{label:<16}{r['wall']:>10.1f}{r['cpu']:>10.1f}{r['passes']:>24}{r['hits']:>12}")
    s, p = res["shared"], res["per-cell"]
    speedup, cpu_speedup = p["wall"] / s["wall"], p["cpu"] / s["cpu"]
    print(f"speedup (per-cell / shared): wall {speedup:.2f}x, CPU {cpu_speedup:.2f}x")
    print(json.dumps({"bench": "bench_cache", "speedup": round(speedup, 3),
                      "encoder_image_passes_cached": s["passes"], "encoder_image_passes_uncached": p["passes"],
                      "cpu_speedup": round(cpu_speedup, 3), "cache_hits_cached": s["hits"],
                      "image_size": [h, w], "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)]}))


if __name__ == "__main__":
    main()
