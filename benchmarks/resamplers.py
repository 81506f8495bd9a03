"""Resampler benchmark: forward+backward time and peak memory of every built-in
resampler at the seed shape, and one Mamba block of cora-kit's torch scan against
mambapy's parallel scan (pscan) on the same weights and input.

    python benchmarks/resamplers.py [--quick] [--views N] [--skip-mambapy]

Seed shape: [18, 256, 1152] (2 panoramas x 9 views); ``--quick`` uses 2 views for the
resampler table and 4 for the Mamba-block comparison (ratios hold; absolute numbers
scale with the batch). Each case runs in its own subprocess, launched the same way,
so its peak RSS (ru_maxrss minus the RSS after building the model and input) belongs
to that case alone. Timings on a shared machine are noisy: other jobs on the same
cores slow any case down. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESAMPLERS = [
    "identity", "mlp", "bimamba", "c-abstractor", "perceiver", "qformer",
    "avgpool", "conv", "spatial-pool", "masked-drop",
]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time_fwd_bwd(fn, x, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        x.grad = None
        t0 = time.perf_counter()
        fn(x).square().mean().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def worker(spec: dict) -> dict:
    """Run one case; returns seconds (best of ``reps``) and peak MB above baseline."""
    import torch

    import cora_kit

    torch.manual_seed(0)
    n, reps = spec["n"], spec["reps"]
    if spec["case"] == "resampler":
        kw = {"in_dim": 1152, "out_dim": 1152} if spec["name"] == "identity" else {}
        model = cora_kit.create("resampler", spec["name"], **kw)
        model.train()
        x = torch.randn(n, 256, model.in_dim, requires_grad=True)
        fn = lambda t: model(t, (16, 16))  # noqa: E731
        backend = model.backend
    else:
        from cora_kit_builtins.resamplers.mamba_block import MambaBlock

        model = MambaBlock(1024, d_state=64, d_conv=4, expand=2, backend="torch")
        backend = "torch scan"
        if spec["case"] == "mambapy":
            from mambapy.mamba import MambaBlock as PyBlock, MambaConfig

            peer = PyBlock(MambaConfig(d_model=1024, n_layers=1, d_state=64, expand_factor=2, d_conv=4))
            peer.load_state_dict(model.state_dict())
            model, backend = peer, "mambapy pscan"
        x = torch.randn(n, 256, 1024, generator=torch.Generator().manual_seed(1), requires_grad=True)
        fn = model
    if not any(p.requires_grad for p in model.parameters()) and not x.requires_grad:
        raise RuntimeError("nothing to differentiate")
    base = _rss_mb()
    seconds = _time_fwd_bwd(fn, x, reps)
    out = {"seconds": seconds, "peak_mb": max(0.0, _peak_mb() - base), "backend": backend}
    if spec.get("save"):
        x.grad = None
        y = fn(x)
        y.square().mean().backward()
        torch.save({"y": y.detach(), "gx": x.grad}, spec["save"])
    return out


def run_case(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, env={**os.environ},
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer views (~2 minutes)")
    ap.add_argument("--views", type=int, default=None, help="N for the resampler table")
    ap.add_argument("--mamba-views", type=int, default=None, help="N for the Mamba block comparison")
    ap.add_argument("--skip-mambapy", action="store_true", help="skip the mambapy peer")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import torch

    n = args.views or (2 if args.quick else 18)
    nm = args.mamba_views or (4 if args.quick else 18)
    reps = 1 if args.quick else 2
    print(f"resamplers: forward+backward, [N, 256, 1152] with N={n}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus (shared machine: timings are noisy)")
    print(f"{'resampler':<14}{'backend':<34}{'fwd+bwd s':>10}{'peak MB':>10}")
    for name in RESAMPLERS:
        r = run_case({"case": "resampler", "name": name, "n": n, "reps": reps})
        if "error" in r:
            print(f"{name:<14}{'ERROR: ' + r['error']}")
            continue
        print(f"{name:<14}{r['backend'][:33]:<34}{r['seconds']:>10.2f}{r['peak_mb']:>10.0f}")

    print(f"\nOne Mamba block (d_model 1024, d_state 64, expand 2), fwd+bwd on [{nm}, 256, 1024], same weights/input")
    result = {"bench": "resamplers", "views": n, "mamba_views": nm, "quick": bool(args.quick)}
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_case({"case": "ours", "n": nm, "reps": reps, "save": str(Path(tmp) / "ours.pt")})
        peer = {"error": "skipped (--skip-mambapy)"} if args.skip_mambapy else run_case(
            {"case": "mambapy", "n": nm, "reps": reps, "save": str(Path(tmp) / "peer.pt")}
        )
        for label, r in (("cora-kit torch scan", ours), ("mambapy pscan", peer)):
            if "error" in r:
                print(f"{label:<22}ERROR: {r['error']}")
            else:
                print(f"{label:<22}{r['seconds']:>10.2f} s{r['peak_mb']:>10.0f} MB")
        if "error" in ours or "error" in peer:
            nan = float("nan")
            result.update(bimamba_speedup_vs_mambapy=nan, bimamba_peak_mem_ratio_vs_mambapy=nan,
                          bimamba_max_abs_err_vs_mambapy=nan,
                          reason=ours.get("error") or peer.get("error"))
        else:
            a, b = torch.load(Path(tmp) / "ours.pt"), torch.load(Path(tmp) / "peer.pt")
            err = max((a["y"] - b["y"]).abs().max().item(), (a["gx"] - b["gx"]).abs().max().item())
            result.update(
                bimamba_speedup_vs_mambapy=round(peer["seconds"] / ours["seconds"], 2),
                bimamba_peak_mem_ratio_vs_mambapy=round(ours["peak_mb"] / max(peer["peak_mb"], 1e-9), 4),
                bimamba_max_abs_err_vs_mambapy=err,
                ours_s=round(ours["seconds"], 3), mambapy_s=round(peer["seconds"], 3),
                ours_peak_mb=round(ours["peak_mb"]), mambapy_peak_mb=round(peer["peak_mb"]),
            )
            print(f"speedup {result['bimamba_speedup_vs_mambapy']}x, peak memory ratio "
                  f"{result['bimamba_peak_mem_ratio_vs_mambapy']}, max abs err (y and dL/dx) {err:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
