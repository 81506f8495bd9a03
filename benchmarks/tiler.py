"""Benchmark: the cora-kit ``e2p`` tiler vs py360convert, pytorch360convert and the OpenCV floor.

Task: B uint8 1024x2048 panoramas -> the seed's 9 views each (global 256x256 + 8 tiles at
pitch 0, yaw 0..315, FOV 90, 256x256) as float in [0,1], for B = 1, 8 and 32, all in one
process. Panoramas arrive as uint8 (decoders produce HWC uint8), so every implementation
starts from them:

- cora-kit: ``cora_kit.create("tiler", "e2p")`` on the uint8 batch in HWC memory
  (``torch.from_numpy(hwc).permute(0, 3, 1, 2)``, no copy): its default backend remaps the
  uint8 pixels with OpenCV through cached fixed-point maps and converts only the views;
- py360convert: ``e2p`` per tile per panorama on the uint8 HWC array (with OpenCV installed
  it takes its ``cv2.remap`` path - the table says which path ran), global view with
  ``cv2.resize(INTER_AREA)``, views converted to float;
- pytorch360convert: ``e2p`` per tile on the float batch ``[B,3,H,W]`` (its input type; the
  uint8 -> float conversion is NOT timed) + ``F.interpolate(antialias=True)`` for the global
  view;
- floor: the raw cached remap - ``cv2.remap`` on the uint8 HWC panorama with the 8 tile maps
  converted once (``cv2.convertMaps(..., CV_16SC2)``) + ``cv2.resize(INTER_AREA)``, uint8
  out, nothing else (the issue's definition); also shown: the same with the 8 maps stacked
  into one remap call (what cora-kit does);
- cora-kit torch backend on float input (the exact, differentiable path), for reference.

Ratios: peer time / cora-kit time per panorama (above 1: cora-kit is faster);
``ratio_vs_floor_b8`` = floor time / cora-kit time at B=8 (1.0 = at the floor). Timing is
round-robin (one call of each implementation per round, the order reversed every other
round) so that load from other processes hits all alike: each ratio is the median over
rounds of the ratio measured within a round; times are medians; the load average is shown.
``max_abs_diff_vs_py360convert``: cora-kit (``ray_spacing=py360convert``) vs py360convert on
the same uint8 panorama, over the 8 tiles, in [0,1] units.

    python benchmarks/tiler.py [--quick] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import cora_kit

H, W, S = 1024, 2048, 256
YAWS = [45.0 * i for i in range(8)]
BATCHES = (1, 8, 32)


def smooth_erp() -> np.ndarray:
    yy, xx = np.meshgrid((np.arange(H) + 0.5) / H, np.arange(W) / W, indexing="ij")
    pole = np.sin(np.pi * yy) ** 2
    base = 0.5 + 0.25 * np.sin(2 * np.pi * 3 * xx) * pole + 0.2 * np.cos(2 * np.pi * (2 * xx + yy)) * pole
    return np.stack([base, base**2, 1 - base], -1).astype(np.float32)


def round_robin(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one call of each per round (after a warm-up), the
    order reversed every other round so that no function always follows the same one."""
    for fn in fns.values():
        fn()  # warm-up: cora-kit's cached maps, py360convert's lru-cached sampler, ...
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(times: dict[str, list[float]], peer: str) -> float:
    """Median over rounds of peer time / cora-kit time (each pair measured in one round)."""
    return statistics.median(p / c for p, c in zip(times[peer], times["cora-kit"], strict=True))


def py360_views(py360, cv2, images: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for img in images:
        glob = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA)
        tiles = [py360.e2p(img, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS]
        out.append(np.stack([glob, *tiles]).astype(np.float32) / 255)
    return out


def p3_views(p3, x: torch.Tensor) -> torch.Tensor:
    glob = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True)
    tiles = [p3.e2p(x, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS]
    return torch.stack([glob, *tiles], 1)


def floor_fns(cv2, images: list[np.ndarray]) -> tuple[Callable[[], object], Callable[[], object]]:
    """The raw cached-remap floor: 8 remap calls (the issue's definition) and one stacked call."""
    from cora_kit.geometry import erp_pixel_coords

    layout = cora_kit.create("tiler", "e2p").layout
    xy = [erp_pixel_coords(layout.views[i], (H, W)).numpy().astype(np.float32) for i in range(1, 9)]
    maps = [cv2.convertMaps(m[..., 0], m[..., 1], cv2.CV_16SC2) for m in xy]
    tall = np.concatenate(xy)
    stacked = cv2.convertMaps(tall[..., 0], tall[..., 1], cv2.CV_16SC2)

    def eight() -> object:
        for img in images:
            [cv2.remap(img, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP) for m1, m2 in maps]
            cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA)
        return None

    def one() -> object:
        for img in images:
            cv2.remap(img, stacked[0], stacked[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA)
        return None

    return eight, one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (under ~2 minutes)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    args = ap.parse_args()
    import cv2
    import py360convert
    import py360convert.utils as py360_utils
    import pytorch360convert

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    rounds = args.repeats or (5 if args.quick else 11)
    py360_path = "OpenCV remap" if getattr(py360_utils, "cv2", None) else "scipy map_coordinates"
    rng = np.random.default_rng(0)
    base = smooth_erp()
    tiler = cora_kit.create("tiler", "e2p")
    exact = cora_kit.create("tiler", "e2p", backend="torch")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    per: dict[int, dict[str, float]] = {}
    ratio: dict[int, dict[str, float]] = {}
    for b in BATCHES:
        noisy = [np.clip(base + 0.05 * rng.standard_normal(base.shape, dtype=np.float32), 0, 1) for _ in range(b)]
        imgs = [np.round(im * 255).astype(np.uint8) for im in noisy]
        u8 = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)  # [B,3,H,W], HWC memory
        xf = u8.contiguous().float().div_(255)
        eight, one = floor_fns(cv2, imgs)
        fns = {  # cora-kit between the two floors: adjacent in every round
            "floor": eight,
            "cora-kit": lambda: tiler(u8),
            "floor-stacked": one,
            "py360convert": lambda: py360_views(py360convert, cv2, imgs),
            "pytorch360convert": lambda: p3_views(pytorch360convert, xf),
            "cora-kit torch": lambda: exact(xf),
        }
        times = round_robin(fns, max(2, rounds if b < 32 else rounds // 2))
        per[b] = {k: statistics.median(v) / b for k, v in times.items()}
        ratio[b] = {k: paired_ratio(times, k) for k in fns if k != "cora-kit"}
    load_after = os.getloadavg()

    parity = cora_kit.create("tiler", "e2p", ray_spacing="py360convert")
    img = np.round(base * 255).astype(np.uint8)
    ours = parity(torch.from_numpy(img).permute(2, 0, 1)).views[0, 1:].permute(0, 2, 3, 1).numpy()
    ref = np.stack([py360convert.e2p(img, 90.0, (y + 180) % 360 - 180, 0.0, (S, S)) for y in YAWS]) / 255
    diff = np.abs(ours - ref)

    names = {
        "cora-kit": f"cora-kit e2p ({tiler.backend.split(' for ')[0]}, uint8 in)",
        "py360convert": f"py360convert {py360convert.__version__} ({py360_path}, uint8 in)",
        "pytorch360convert": f"pytorch360convert {pytorch360convert.__version__} (float in)",
        "floor": "floor: 8 x cv2.remap + cv2.resize (uint8 out)",
        "floor-stacked": "floor, one stacked cv2.remap + cv2.resize",
        "cora-kit torch": "cora-kit e2p backend=torch (float in)",
    }  # speed-up column: median over rounds of the paired ratio peer / cora-kit
    print(f"tiler benchmark: {B_text()} uint8 ERP {H}x{W} -> global + 8 tiles of {S}x{S} as float; "
          f"torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}; median of "
          f"{rounds} round-robin rounds (B=32: {max(2, rounds // 2)}); load average {load_before[0]:.1f} "
          f"before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    header = f"{'implementation':58s}" + "".join(f"{'B=' + str(b) + ' ms':>10s}" for b in BATCHES)
    print(header + "   cora-kit speed-up (B=1/8/32)")
    for key, label in names.items():
        ms = "".join(f"{1e3 * per[b][key]:10.2f}" for b in BATCHES)
        speed = "-" if key == "cora-kit" else " / ".join(f"{ratio[b][key]:.2f}x" for b in BATCHES)
        print(f"{label:58s}{ms}   {speed}")
    print(f"cora-kit(ray_spacing=py360convert) vs py360convert on the same uint8 panorama, 8 tiles: "
          f"max {diff.max():.2e}, mean {diff.mean():.2e} ({(diff > 0.5 / 255).mean():.1e} of values differ)")
    print(f"({time.perf_counter() - t_start:.0f} s) note: timings are noisy when other processes share the CPU.")
    out = {"bench": "tiler"}
    for b in BATCHES:
        out[f"ratio_vs_py360convert_b{b}"] = round(ratio[b]["py360convert"], 2)
        out[f"ratio_vs_pytorch360convert_b{b}"] = round(ratio[b]["pytorch360convert"], 2)
    for b in BATCHES:
        out[f"ratio_vs_floor_b{b}"] = round(ratio[b]["floor"], 2)
    out["ratio_vs_stacked_floor_b8"] = round(ratio[8]["floor-stacked"], 2)
    out["cora_kit_ms_b8"] = round(1e3 * per[8]["cora-kit"], 2)
    out["max_abs_diff_vs_py360convert"] = float(diff.max())
    out["py360convert_path"] = py360_path
    out["load_avg_1m"] = [round(load_before[0], 2), round(load_after[0], 2)]
    print(json.dumps(out))


def B_text() -> str:
    return "B = " + ", ".join(str(b) for b in BATCHES) + ":"


if __name__ == "__main__":
    main()
