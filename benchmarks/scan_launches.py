"""How many operations one BiMamba forward+backward issues with the torch scan, by scan
version and number of views: the device-independent count behind GPU timings.

    python benchmarks/scan_launches.py [--quick] [--device meta|cpu] [--old-rev fa4ea0a]

On a GPU the torch scan is launch-bound: each tensor operation in its Python loops is one
(tiny) CUDA kernel, so its time is about (kernel-launching ops) x (cost per launch). This
script counts those ops (``TorchDispatchMode``, view ops counted apart) for the bimamba
resampler at the seed config (4 layers, hidden 1024, d_state 64) on [N, 256, 1152], for
the scan in this working tree and for the scan as of ``--old-rev`` (loaded from git: the
version before "batch groups on Python threads", which tiled 4 views per group with
16-step chunks). ``--device meta`` (default) runs the same Python code with no arithmetic,
so the full shape costs seconds; ``cpu`` also times it. One intra-op thread, so every op
runs on the calling thread where the dispatch mode sees it (the tiling does not depend on
the thread count at this width). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SCAN_PATH = "plugins/cora_kit_builtins/resamplers/selective_scan.py"
VIEW_OPS = {"view", "_unsafe_view", "slice", "select", "unsqueeze", "squeeze", "transpose", "t", "expand",
            "alias", "as_strided", "detach", "permute", "split", "split_with_sizes", "chunk", "unbind",
            "narrow", "diagonal", "view_as", "lift_fresh"}


class OpCounter(TorchDispatchMode):
    """Counts aten ops: ``kernels`` (ops that compute: one launch each on CUDA) and ``views``."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.views = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name.rstrip("_") in VIEW_OPS:
            self.views += 1
        else:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def load_scan(rev: str | None) -> Any:
    """The selective_scan module of the working tree (None) or of git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    if rev is None:
        path = root / SCAN_PATH
    else:
        text = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{SCAN_PATH}"], capture_output=True,
                              text=True, check=True).stdout
        path = Path(tempfile.mkdtemp()) / f"selective_scan_{rev}.py"
        path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"scan_{rev or 'tree'}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def count(scan: Any, chunk: int, views: int, device: str) -> dict[str, Any]:
    """Ops of one bimamba forward+backward on [views, 256, 1152] with ``scan``."""
    import cora_kit
    from cora_kit_builtins.resamplers import mamba_block

    original = mamba_block.selective_scan
    mamba_block.selective_scan = scan.selective_scan
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = cora_kit.create("resampler", "bimamba", backend="torch", chunk=chunk)
            x = torch.randn(views, 256, 1152, requires_grad=True)
        counter = OpCounter()
        t0 = time.perf_counter()
        with counter:
            model(x, (16, 16)).square().mean().backward()
        seconds = time.perf_counter() - t0
    finally:
        mamba_block.selective_scan = original
    return {"views": views, "kernels": counter.kernels, "views_ops": counter.views,
            "seconds": seconds if device == "cpu" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="meta", choices=("meta", "cpu"))
    ap.add_argument("--old-rev", default="fa4ea0a", help="git revision of the older scan (chunk 16)")
    ap.add_argument("--quick", action="store_true", help="views 2 and 4 instead of 9 and 18")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shapes = (2, 4) if args.quick else (9, 18)
    versions = {"tree": (load_scan(None), 8), args.old_rev: (load_scan(args.old_rev), 16)}
    rows = []
    print(f"scan_launches: bimamba fwd+bwd, seed config, [N,256,1152], device {args.device}, torch {torch.__version__}")
    print(f"{'scan':<10}{'chunk':>6}{'N':>5}{'kernel ops':>12}{'view ops':>10}{'cpu s':>8}")
    for label, (scan, chunk) in versions.items():
        for n in shapes:
            r = {"scan": label, "chunk": chunk, **count(scan, chunk, n, args.device)}
            rows.append(r)
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
            print(f"{label:<10}{chunk:>6}{n:>5}{r['kernels']:>12,}{r['views_ops']:>10,}{secs:>8}", flush=True)
    by = {(r["scan"], r["views"]): r["kernels"] for r in rows}
    lo, hi = shapes
    result = {"bench": "scan_launches", "device": args.device, "old_rev": args.old_rev,
              **{f"kernels_{s}_{n}": k for (s, n), k in by.items()},
              f"tree_vs_old_at_{lo}": round(by[("tree", lo)] / by[(args.old_rev, lo)], 2),
              f"tree_vs_old_at_{hi}": round(by[("tree", hi)] / by[(args.old_rev, hi)], 2),
              f"tree_{hi}_vs_{lo}": round(by[("tree", hi)] / by[("tree", lo)], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
