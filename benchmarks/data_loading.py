"""Benchmark: decoding + tiling a folder of 2048x1024 JPEG panoramas, images/s.

The folder (made in a temp dir, JPEG quality 90): the two real panoramas of
``/work/shared/data`` (or ``$CORA_KIT_TEST_DATA``) and copies rolled by k x 45 degrees (so
the files differ), plus as many panoramas of cora-kit's synthetic set rendered at 1024x2048.

Measured, in one process, over the same files, for ``num_workers`` 0, 1 and 2:

- cora-kit: ``TiledImages`` + ``tiled_batches`` (what training, evaluation and
  ``cora-kit caption`` run): the JPEG is decoded to uint8 (HWC, as decoded) and tiled by
  the ``e2p`` tiler's OpenCV backend; only the views become float;
- peer: the same loader on the float path cora-kit used before (``PanoramaDataset`` with a
  tiler: decode to float ``[3,H,W]``, then the tiler's exact torch backend on floats);
- decode only: PIL decoding to uint8 (the ceiling of both).

Images/s = files / wall time of one pass over the loader (after a warm-up pass that builds
the tiler's cached maps), median of ``--repeats``. Also printed: single-process decode and
tile milliseconds per image. Last line: JSON with ``images_per_s_w{n}``,
``speedup_vs_float_path_w{n}`` and the load average.

    python benchmarks/data_loading.py [--quick] [--images N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cora_kit
from cora_kit.data.csv_loaders import ImageItem
from cora_kit.data.dataset import PanoramaDataset, TiledImages, make_loader, tile_function, tiled_batches
from cora_kit.data.images import read_erp_hwc

H, W = 1024, 2048
WORKERS = (0, 1, 2)


def real_dir() -> Path | None:
    for cand in (os.environ.get("CORA_KIT_TEST_DATA"), "/work/shared/data"):
        if cand and Path(cand).is_dir() and any(Path(cand).glob("*.png")):
            return Path(cand)
    return None


def make_folder(out: Path, n: int) -> tuple[list[Path], int]:
    """``n`` JPEGs: real panoramas (rolled copies) and synthetic ones, half each."""
    from cora_kit.data.render import render_erp
    from cora_kit.data.scene import sample_scene

    files: list[Path] = []
    real = sorted(real_dir().glob("*.png")) if real_dir() else []
    n_real = n // 2 if real else 0
    for i in range(n_real):
        img = np.asarray(Image.open(real[i % len(real)]).convert("RGB").resize((W, H)))
        img = np.roll(img, (i // len(real)) * W // 8, axis=1)
        files.append(out / f"real_{i:03d}.jpg")
        Image.fromarray(img).save(files[-1], quality=90)
    rng = np.random.default_rng(0)
    for i in range(n - n_real):
        files.append(out / f"synth_{i:03d}.jpg")
        Image.fromarray(render_erp(sample_scene(rng), H, W)).save(files[-1], quality=90)
    return files, n_real


def one_pass_fast(files: list[Path], tiler, workers: int, batch: int) -> int:
    data = TiledImages([{"image_path": str(f)} for f in files], tile_function(tiler))
    return sum(len(i) for i, _ in tiled_batches(data, batch, workers))


def one_pass_float(files: list[Path], tiler, workers: int, batch: int) -> int:
    rows = [ImageItem(f.stem, str(f)) for f in files]
    loader = make_loader(PanoramaDataset(rows, tiler=tiler), batch_size=batch, num_workers=workers)
    return sum(b["views"].shape[0] for b in loader)


def one_pass_decode(files: list[Path], workers: int, batch: int) -> int:
    class Decode(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int) -> dict:
            return {"shape": read_erp_hwc(files[i]).shape}

    return sum(len(b["shape"]) for b in make_loader(Decode(), batch_size=batch, num_workers=workers))


def images_per_s(fn, n: int, repeats: int) -> float:
    fn()  # warm-up: cached maps; worker start-up is part of every timed pass
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert fn() == n
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (under ~2 minutes)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    n = args.images or (16 if args.quick else 48)
    repeats = args.repeats or (2 if args.quick else 3)
    fast = cora_kit.create("tiler", "e2p")
    exact = cora_kit.create("tiler", "e2p", backend="torch")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        files, n_real = make_folder(Path(tmp), n)
        mb = sum(f.stat().st_size for f in files) / 1e6
        hwc = read_erp_hwc(files[0])
        u8 = torch.from_numpy(hwc).permute(2, 0, 1)[None]
        decode_ms = 1e3 * statistics.median(_time(lambda: read_erp_hwc(files[0]), 5))
        tile_ms = 1e3 * statistics.median(_time(lambda: fast(u8), 5))
        float_ms = 1e3 * statistics.median(_time(lambda: exact(u8.float() / 255), 3))
        rows = {}
        for w in WORKERS:
            rows[w] = {
                "cora-kit": images_per_s(lambda w=w: one_pass_fast(files, fast, w, args.batch_size), n, repeats),
                "float path": images_per_s(lambda w=w: one_pass_float(files, exact, w, args.batch_size), n, repeats),
                "decode only": images_per_s(lambda w=w: one_pass_decode(files, w, args.batch_size), n, repeats),
            }
    load_after = os.getloadavg()
    print(f"data loading: {n} JPEGs {W}x{H} ({n_real} real, {n - n_real} synthetic; {mb:.1f} MB), e2p views "
          f"(global + 8 x 256 px), batch {args.batch_size}; median of {repeats} passes; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"one image, main process: decode {decode_ms:.1f} ms; tile uint8 (OpenCV) {tile_ms:.1f} ms; "
          f"tile float (torch) {float_ms:.1f} ms + the float decode")
    print(f"{'num_workers':>12s}{'cora-kit img/s':>16s}{'float path img/s':>18s}{'decode only img/s':>19s}{'speed-up':>10s}")
    for w, r in rows.items():
        print(f"{w:12d}{r['cora-kit']:16.1f}{r['float path']:18.1f}{r['decode only']:19.1f}"
              f"{r['cora-kit'] / r['float path']:9.2f}x")
    out = {"bench": "data_loading"}
    for w, r in rows.items():
        out[f"images_per_s_w{w}"] = round(r["cora-kit"], 1)
    for w, r in rows.items():
        out[f"speedup_vs_float_path_w{w}"] = round(r["cora-kit"] / r["float path"], 2)
    out["decode_only_images_per_s_w2"] = round(rows[2]["decode only"], 1)
    out["load_avg_1m"] = [round(load_before[0], 2), round(load_after[0], 2)]
    print(json.dumps(out))


def _time(fn, k: int) -> list[float]:
    fn()
    out = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    main()
