"""Load test of ``cora-kit serve`` on 127.0.0.1: latency percentiles and throughput.

    python benchmarks/serve.py [--quick] [--run runs/NAME | --model DIR] [--image PANO.png]
        [--requests 64] [--concurrency 8] [--max-batch 8]

Starts the server in this process (uvicorn on a free 127.0.0.1 port, nothing else is ever
contacted) and sends a bounded number of captioning requests (``--requests``, at most
``--concurrency`` in flight), each uploading the same panorama (default: the Mars panorama
from ../shared/data, else a synthetic test panorama). Without ``--run``/``--model`` a tiny
run is trained first (a few steps; the model's answers do not matter here, its cost does).

Peers measured in the same run, on the same model and panorama:

* ``direct``: ``Captioner.caption`` called one image at a time in this process (no HTTP,
  no upload, no queue): what the server's per-request overhead is measured against;
* ``server, max-batch 1``: the same load without batching: what batching buys.

Prints a table, and as its last line one JSON object ``{"bench": "serve", ...}`` with the
percentiles (ms), throughputs (requests/s) and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARS = "mars-spirit-husband-hill-erp-2048x1024.png"


def _train_tiny(root: Path) -> Path:
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel
    from cora_kit.train.engine import run

    sets = [f"data.synth_dir={root / 'synth'}", "data.synth.n_train=8", "data.synth.n_val=2", "data.synth.n_test=4",
            "stages.stage1.max_steps=1", "stages.stage2.max_steps=2", "stages.stage3.max_steps=2",
            "eval.metrics=[bleu4]", "device=cpu"]
    out = root / "runs" / "tiny"
    run(resolve_config("tiny", None, sets), out, model_factory=CoraModel.from_config, progress=False)
    return out


def _default_image(tmp: Path, run_dir: Path | None) -> Path:
    env = os.environ.get("CORA_KIT_TEST_DATA")
    for d in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (d / MARS).is_file():
            return d / MARS
    if run_dir is not None:
        found = sorted((run_dir.parent.parent / "synth" / "images").glob("test_*.png"))
        if found:
            return found[0]
    from PIL import Image

    path = tmp / "pano.png"
    Image.effect_noise((1024, 512), 64).convert("RGB").save(path)
    return path


def _percentiles(ms: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": qs[49], "p90": qs[89], "p99": qs[98], "max": max(ms), "mean": statistics.fmean(ms)}


async def _load(url: str, image: bytes, name: str, n: int, concurrency: int, query: str) -> dict[str, Any]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        async with sem:
            t0 = time.perf_counter()
            r = await client.post("/v1/caption", files={"image": (name, image, "image/png")}, data={"query": query})
            latencies.append((time.perf_counter() - t0) * 1000.0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                batch_sizes.append(r.json()["batch_size"])

    async with httpx.AsyncClient(base_url=url, timeout=300.0) as client:
        await client.post("/v1/caption", files={"image": (name, image, "image/png")}, data={"query": query})  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(n)))
        wall = time.perf_counter() - t0
    return {"latency_ms": _percentiles(latencies), "throughput_rps": n / wall, "wall_s": wall,
            "statuses": statuses, "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 requests, 16 direct captions (< 2 minutes)")
    ap.add_argument("--run", type=Path, help="run folder to serve (default: train a tiny run first)")
    ap.add_argument("--model", type=Path, help="exported model folder to serve")
    ap.add_argument("--image", type=Path, help="panorama to upload (default: the Mars panorama)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--query", default="what is above the horizon?")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 32)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from transformers.utils import logging as hf_logging

    from cora_kit.serving import Captioner
    from cora_kit.serving.server import ServeSettings, background_server, create_app

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_dir = args.run
        if run_dir is None and args.model is None:
            print("training a tiny run (a few steps per stage) ...", file=sys.stderr)
            run_dir = _train_tiny(tmp)
        cap = (Captioner.from_export(args.model, device="cpu") if args.model is not None
               else Captioner.from_run(run_dir, device="cpu"))
        image = args.image or _default_image(tmp, run_dir)
        data = image.read_bytes()

        n_direct = 16 if args.quick else 32
        cap.caption([image], args.query)  # warm-up
        t0 = time.perf_counter()
        direct_ms = []
        for _ in range(n_direct):
            t1 = time.perf_counter()
            cap.caption([image], args.query)
            direct_ms.append((time.perf_counter() - t1) * 1000.0)
        direct_rps = n_direct / (time.perf_counter() - t0)

        runs: dict[str, dict[str, Any]] = {}
        for label, max_batch in ((f"server, max-batch {args.max_batch}", args.max_batch), ("server, max-batch 1", 1)):
            settings = ServeSettings(max_batch=max_batch, max_queue=max(64, args.concurrency), timeout_s=600)
            with background_server(create_app(cap, settings)) as url:
                runs[label] = asyncio.run(_load(url, data, image.name, args.requests, args.concurrency, args.query))

    import platform

    import psutil

    load = os.getloadavg()
    print(f"model {cap.describe()['name']} ({cap.describe()['preset']}, {cap.device}), panorama {image.name}"
          f" ({len(data) / 2**20:.1f} MB), {args.requests} requests, {args.concurrency} in flight;"
          f" {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores,"
          f" load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'':<24}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}{'batch':>7}  status")
    d = _percentiles(direct_ms)
    print(f"{'direct Captioner (1x1)':<24}{d['p50']:>9.0f}{d['p90']:>9.0f}{d['p99']:>9.0f}{d['max']:>9.0f}"
          f"{direct_rps:>8.2f}{1:>7}  -")
    for label, r in runs.items():
        q = r["latency_ms"]
        print(f"{label:<24}{q['p50']:>9.0f}{q['p90']:>9.0f}{q['p99']:>9.0f}{q['max']:>9.0f}"
              f"{r['throughput_rps']:>8.2f}{r['mean_batch']:>7.1f}  {r['statuses']}")
    batched, single = runs[f"server, max-batch {args.max_batch}"], runs["server, max-batch 1"]
    result = {
        "bench": "serve", "requests": args.requests, "concurrency": args.concurrency, "max_batch": args.max_batch,
        "image": image.name, "device": str(cap.device),
        "p50_ms": round(batched["latency_ms"]["p50"], 1), "p90_ms": round(batched["latency_ms"]["p90"], 1),
        "p99_ms": round(batched["latency_ms"]["p99"], 1), "max_ms": round(batched["latency_ms"]["max"], 1),
        "throughput_rps": round(batched["throughput_rps"], 3), "mean_batch": round(batched["mean_batch"], 2),
        "all_ok": set(batched["statuses"]) == {200} and set(single["statuses"]) == {200},
        "direct_rps": round(direct_rps, 3), "unbatched_rps": round(single["throughput_rps"], 3),
        "vs_direct": round(batched["throughput_rps"] / direct_rps, 3),
        "vs_unbatched": round(batched["throughput_rps"] / single["throughput_rps"], 3),
        "loadavg_1m": round(load[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
