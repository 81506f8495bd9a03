"""Device check: ``--batch-size auto``'s CUDA path on the paper preset (random init).

    python benchmarks/gpu_autobatch.py [--quick]

For each stage, searches the largest micro-batch that fits with real forward+backward
trials of the stage's step function (doubling, then bisection; out-of-memory caught and the
cache emptied), applies the safety margin and keeps the configured effective batch
(``batch_size x grad_accum``) through accumulation. Prints a table and, last, one JSON line
{"bench": "gpu_autobatch", ...}. On a CPU-only machine it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from cora_kit.config import resolve_config
from cora_kit.pipeline import CoraModel
from cora_kit.train.autobatch import search_stage_batch
from cora_kit.train.stages import STEP_FNS, stage1_views

ITEM = {"query": "what is behind the viewer?", "answer": "a red ball behind the viewer"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same check (it is short)")
    ap.add_argument("--accum", type=int, default=None, help="override every stage's grad_accum (bigger search)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    result: dict = {"bench": "gpu_autobatch"}
    if not torch.cuda.is_available():
        result["status"] = "skipped: no CUDA device"
        print(json.dumps(result))
        return
    device = torch.device("cuda")
    result["device"] = torch.cuda.get_device_name(0)
    overrides = ["model.encoder.options.random_init=true", "model.llm.options.random_init=true"]
    if args.accum:
        overrides += [f"stages.stage{k}.grad_accum={args.accum}" for k in (1, 2, 3)]
    config = resolve_config("paper", overrides=overrides)
    t_build = time.perf_counter()
    model = CoraModel.from_config(config, device=device)
    print(f"paper preset built in {time.perf_counter() - t_build:.0f} s", flush=True)
    erp = torch.rand(1, 3, 256, 512, device=device)
    rows = []
    for stage in (1, 2, 3):
        cfg = getattr(config.stages, f"stage{stage}")
        model.set_stage(stage)
        model.train()
        with torch.no_grad():
            views = model.tile(erp)
            if stage == 1:
                views = views[:, stage1_views(model)]
            hidden = model.encode_frozen(views, stage)
        tried: list[int] = []

        def step(b: int) -> torch.Tensor:
            tried.append(b)
            print(f"  stage {stage}: trying micro-batch {b}", flush=True)
            model.zero_grad(set_to_none=True)
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, _ = STEP_FNS[stage](model, hidden.expand(b, *hidden.shape[1:]).clone(), [ITEM] * b, cfg)
                loss.backward()
                torch.cuda.synchronize()
            finally:
                model.zero_grad(set_to_none=True)
            return loss

        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        plan = search_stage_batch(step, cfg.batch_size, cfg.grad_accum, 1, "cuda")
        rows.append({
            "stage": stage, "configured": f"{cfg.batch_size}x{cfg.grad_accum}", "tried": tried,
            "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum, "effective": plan.effective,
            "found": plan.found, "rule": plan.rule, "search_s": round(time.perf_counter() - t0, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        })
        print(f"stage {stage}: {rows[-1]}", flush=True)
        torch.cuda.empty_cache()
    print(f"--batch-size auto on {result['device']} (paper preset, random init, bf16 autocast)")
    print(f"{'stage':<7}{'configured':<12}{'chosen':<14}{'found':>7}{'peak GiB':>10}{'search s':>10}  trials")
    for r in rows:
        chosen = f"{r['micro_batch']}x{r['grad_accum']}"
        print(f"{r['stage']:<7}{r['configured']:<12}{chosen:<14}{r['found']:>7}{r['peak_gib']:>10}{r['search_s']:>10}  {r['tried']}")
    result.update(status="ok", stages=rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
