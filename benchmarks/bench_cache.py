"""Bench feature cache: a 2x2x1 grid with the shared frozen-encoder cache vs per-cell caches.

    python benchmarks/bench_cache.py [--quick]

Both grids run the same cells (mlp, bimamba) x (none, densecl) x 1 seed on the tiny preset
with the same synthetic data, in this process, one after the other; the uncached grid gives
every cell its own empty cache (what a grid without a shared cache pays). Prints a table and,
as its last line, {"bench": "bench_cache", "speedup": s, "encoder_image_passes_cached": a,
"encoder_image_passes_uncached": b}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and steps (< 2 minutes)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from cora_kit.bench.grid import build_grid
    from cora_kit.bench.merge import load_cell_records
    from cora_kit.bench.runner import BenchSpec, run_grid
    from cora_kit.data.synth import ensure_synthetic

    n_train, steps = (24, 2) if args.quick else (96, 8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        ensure_synthetic(data, n_train=n_train, n_val=4, n_test=8, size=(128, 256), seed=0)
        overrides = [f"stages.stage{k}.max_steps={steps}" for k in (1, 2, 3)] + ["eval.metrics=[cider]"]
        cells = build_grid(["mlp", "bimamba"], ["none", "densecl"], 1)
        rows = {}
        for label, shared in (("shared cache", True), ("per-cell cache", False)):
            spec = BenchSpec(cells=cells, preset="tiny", data=str(data), overrides=overrides, use_shared_cache=shared)
            t0 = time.perf_counter()
            progress = run_grid(spec, root / label.replace(" ", "-"))
            seconds = time.perf_counter() - t0
            if progress.failed:
                raise SystemExit(f"{label}: cells failed: {progress.failed}")
            records = load_cell_records(root / label.replace(" ", "-"))
            rows[label] = (seconds, sum(r["encoder_image_passes"] for r in records))
    (t_c, p_c), (t_u, p_u) = rows["shared cache"], rows["per-cell cache"]
    print(f"2x2x1 grid, tiny preset, {n_train} train images, {steps} steps per stage")
    print(f"{'grid':<16}{'wall s':>10}{'encoder image passes':>24}")
    for label, (sec, passes) in rows.items():
        print(f"{label:<16}{sec:>10.1f}{passes:>24}")
    print(f"speedup (per-cell / shared): {t_u / t_c:.2f}x")
    print(json.dumps({"bench": "bench_cache", "speedup": round(t_u / t_c, 3),
                      "encoder_image_passes_cached": p_c, "encoder_image_passes_uncached": p_u}))


if __name__ == "__main__":
    main()
