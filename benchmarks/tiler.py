"""Benchmark: the cora-kit ``e2p`` tiler vs py360convert and pytorch360convert.

Task: a 1024x2048 float32 ERP -> the seed's 9 views (global 256x256 + 8 tiles at pitch 0,
yaw 0..315, FOV 90, 256x256), for B=1 and B=8 panoramas, all in one process:

- py360convert: ``e2p`` per tile per panorama (its scipy ``map_coordinates`` path; it
  switches to OpenCV ``remap`` silently when cv2 is importable - the table says which path
  ran) + the global view with PIL's antialiased bilinear resize;
- pytorch360convert: ``e2p`` per tile on the batch (it rebuilds its grid every call and
  clamps at the seam) + ``F.interpolate(antialias=True)`` for the global view;
- cora-kit: ``cora_kit.create("tiler", "e2p")`` - cached grids, one ``grid_sample`` for
  all tiles, exact seam wrap from a precomputed tap list, box-filter global view.

Ratio = peer ms / cora-kit ms per panorama (above 1: cora-kit is faster). Median of
``--repeats`` runs after a warm-up. Timings taken while other processes load the CPU are
noisy. ``max_abs_diff_vs_py360convert`` is measured with ``ray_spacing=py360convert`` on a
smooth image, over the 8 tiles.

    python benchmarks/tiler.py [--quick] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import cora_kit

H, W, S = 1024, 2048, 256
YAWS = [45.0 * i for i in range(8)]


def smooth_erp() -> np.ndarray:
    yy, xx = np.meshgrid((np.arange(H) + 0.5) / H, np.arange(W) / W, indexing="ij")
    pole = np.sin(np.pi * yy) ** 2
    base = 0.5 + 0.25 * np.sin(2 * np.pi * 3 * xx) * pole + 0.2 * np.cos(2 * np.pi * (2 * xx + yy)) * pole
    return np.stack([base, base**2, 1 - base], -1).astype(np.float32)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (builds cora-kit's cached plan, py360convert's lru-cached sampler)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def py360_views(py360, images: list[np.ndarray]) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for img in images:
        glob = np.stack([np.asarray(Image.fromarray(img[..., c]).resize((S, S), Image.BILINEAR)) for c in range(3)], -1)
        tiles = [py360.e2p(img, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS]
        out.append(np.stack([glob, *tiles]))
    return out


def p3_views(p3, x: torch.Tensor) -> torch.Tensor:
    glob = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True)
    tiles = [p3.e2p(x, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS]
    return torch.stack([glob, *tiles], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (under ~2 minutes)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)

    import py360convert
    import py360convert.utils as py360_utils
    import pytorch360convert

    py360_path = "OpenCV remap" if getattr(py360_utils, "cv2", None) else "scipy map_coordinates"
    rng = np.random.default_rng(0)
    base = smooth_erp()
    tiler = cora_kit.create("tiler", "e2p")
    rows, ratios = [], {}
    for b in (1, 8):
        imgs = [np.clip(base + 0.05 * rng.standard_normal(base.shape, dtype=np.float32), 0, 1) for _ in range(b)]
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        t_py = timed(lambda: py360_views(py360convert, imgs), max(1, repeats // (2 if b > 1 else 1)))
        t_p3 = timed(lambda: p3_views(pytorch360convert, x), repeats)
        t_ck = timed(lambda: tiler(x), repeats)
        for name, t in ((f"py360convert ({py360_path})", t_py), ("pytorch360convert", t_p3), ("cora-kit e2p", t_ck)):
            rows.append((name, b, 1e3 * t / b, t_py / t if name.startswith("py360") else t / t_ck))
        ratios[f"ratio_vs_py360convert_b{b}"] = round(t_py / t_ck, 2)
        ratios[f"ratio_vs_pytorch360convert_b{b}"] = round(t_p3 / t_ck, 2)

    parity = cora_kit.create("tiler", "e2p", ray_spacing="py360convert")
    ours = parity(torch.from_numpy(base).permute(2, 0, 1)[None]).views[0, 1:].permute(0, 2, 3, 1).numpy()
    ref = np.stack([py360convert.e2p(base, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS])
    max_diff = float(np.abs(ours - ref).max())

    print(f"tiler benchmark: ERP {H}x{W} float32 -> global + 8 tiles of {S}x{S}; "
          f"torch threads {torch.get_num_threads()}; median of {repeats} (py360convert B=8: fewer)")
    print(f"{'implementation':40s} {'B':>3s} {'ms/panorama':>12s} {'cora-kit speed-up':>18s}")
    for name, b, ms, _ in rows:
        speed = ratios.get(f"ratio_vs_{'py360convert' if name.startswith('py360') else 'pytorch360convert'}_b{b}")
        print(f"{name:40s} {b:3d} {ms:12.2f} {('-' if name.startswith('cora') else f'{speed:.2f}x'):>18s}")
    print(f"max |cora-kit(ray_spacing=py360convert) - py360convert| over 8 tiles, smooth image: {max_diff:.2e}")
    print("note: timings are noisy when other processes share the CPU.")
    print(json.dumps({
        "bench": "tiler",
        "ratio_vs_py360convert_b1": ratios["ratio_vs_py360convert_b1"],
        "ratio_vs_py360convert_b8": ratios["ratio_vs_py360convert_b8"],
        "ratio_vs_pytorch360convert_b1": ratios["ratio_vs_pytorch360convert_b1"],
        "ratio_vs_pytorch360convert_b8": ratios["ratio_vs_pytorch360convert_b8"],
        "max_abs_diff_vs_py360convert": max_diff,
        "py360convert_path": py360_path,
    }))


if __name__ == "__main__":
    main()
