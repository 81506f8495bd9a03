"""The paper preset as a GPU user runs it: throughput, memory, FLOP utilisation, a real run.

    timeout 590 python benchmarks/gpu_paper.py --budget-s 540 \\
        [--mamba-sdist .whl/mamba_ssm-2.3.2.post1.tar.gz] [--peak-tflops N] [--skip explain,mlp,run]
    python benchmarks/gpu_paper.py --cpu-smoke     # the same code on this CPU, tiny preset (~2 min)

On one CUDA device, paper preset with random init (SigLIP2-so400m, Qwen3-0.6B: real shapes,
no weights), bf16 autocast (``precision: auto``), in this order, each section printed as it
finishes and skipped (with the reason) when the time guard says it would not fit:

1. ``env``: device, torch/CUDA, the bf16 dense peak of the card (table below or
   ``--peak-tflops``); mamba-ssm's kernels imported, or built from ``--mamba-sdist``
   (``benchmarks/mamba_ssm_from_sdist.py``, fp32 + bf16 kernels), else the torch scan.
2. ``explain``: the 12.27 s vs 0.588 s question of benchmarks/RESULTS.md. The torch scan
   forward+backward on [18,256,1152] (gpu_check's region) and on [9,256,1152] (the views of
   model_step's batch-1 Stage-1 step), then model_step's whole Stage-1 step region with the
   torch scan forced, all fp32; kernel-launching ops counted on the meta device
   (``scan_launches.py``), so seconds per op on this GPU follow.
3. ``bimamba`` / ``mlp``: per stage, the micro-batch ``--batch-size auto`` picks (CUDA
   trials, ``cora_kit.train.autobatch``), then at that batch: step time (forward, backward,
   AdamW) over several steps, samples/s, peak memory, FLOPs of one step
   (``torch.utils.flop_counter``: matmuls, convolutions, attention; the selective scan is
   not counted), achieved TFLOP/s and MFU against the bf16 peak. Stage 2 below 40% MFU gets
   a ``torch.profiler`` table of the kernels that take the time and the GPU-busy fraction.
4. ``run``: a real ``cora-kit run --preset paper`` (random init, ``--batch-size auto``) on a
   small synthetic set through all three stages and evaluation, as a subprocess.
5. ``epoch``: one epoch of each stage at QuIC-360's size (~5,300 train samples and Stage-1
   images) from the measured samples/s, plus the frozen-encoder pass that fills the cache.

A ``# partial: {...}`` line follows every section (a killed run still leaves numbers); the
last line is one JSON object ``{"bench": "gpu_paper", ...}``. Without CUDA (and without
``--cpu-smoke``) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
#: dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, no sparsity)
BF16_PEAK_TFLOPS = {"H200": 989.5, "H100 SXM": 989.5, "H100 80GB HBM3": 989.5, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "B200": 2250.0}
#: QuIC-360 (shared/seed/CORA-architecture.md): ~5,300 train samples; Stage 1 uses its images
QUIC360_TRAIN = 5300
MFU_GOAL_STAGE2 = 0.40
ITEM = {"query": "what is on the left side of the viewer?", "answer": "a red cube on the ground near a blue ball"}


class Guard:
    """Time budget: ``fits(seconds)`` says whether a section of that cost still fits."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget = budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def fits(self, seconds: float) -> bool:
        return self.left() > seconds


def say(text: str) -> None:
    print(text, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    for key, value in BF16_PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return value, f"datasheet ({key})"
    return None, f"unknown card '{name}': pass --peak-tflops for MFU"


# --- 1. env -------------------------------------------------------------------------------


def section_env(args: argparse.Namespace, device: torch.device, result: dict[str, Any]) -> None:
    from cora_kit_builtins.resamplers.mamba_block import mamba_ssm_kernels

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    peak, source = peak_tflops(name, args.peak_tflops)
    result.update(device=name, torch=torch.__version__, cuda=torch.version.cuda, bf16_peak_tflops=peak,
                  peak_source=source)
    fn, _, reason = mamba_ssm_kernels()
    if fn is None and args.mamba_sdist and device.type == "cuda":
        sys.path.insert(0, str(HERE))
        from mamba_ssm_from_sdist import build_and_register

        t0 = time.perf_counter()
        build_and_register(args.mamba_sdist, tempfile.mkdtemp(prefix="mamba_build_"), with_bf16=True)
        result["mamba_build_s"] = round(time.perf_counter() - t0, 1)
        fn, _, reason = mamba_ssm_kernels()
    result["mamba_ssm"] = "importable" if fn is not None else reason
    say(f"env: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 peak {peak} TFLOP/s ({source});"
        f" mamba-ssm: {result['mamba_ssm']}")


# --- model and steps ---------------------------------------------------------------------


def build_model(preset: str, device: torch.device, resampler: str, overrides: list[str]) -> Any:
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel

    sets = [f"model.resampler.name={resampler}", *overrides]
    if preset == "paper":
        sets += ["model.encoder.options.random_init=true", "model.llm.options.random_init=true"]
    config = resolve_config(preset, None, sets)
    return CoraModel.from_config(config, device=device)


def stage_hidden(model: Any, stage: int, device: torch.device) -> torch.Tensor:
    """Frozen-encoder output of one random panorama, as the feature cache serves it."""
    from cora_kit.train.stages import stage1_views

    erp = torch.rand(1, 3, 512, 1024, device=device, generator=torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        hidden = model.encode_frozen(model.tile(erp), stage).float()
    return hidden[:, stage1_views(model)] if stage == 1 else hidden


def make_step(model: Any, stage: int, hidden: torch.Tensor, precision: str) -> Callable[[int], torch.Tensor]:
    """``step(b)``: forward + backward of the stage's step function on a micro-batch of b."""
    from cora_kit.device import autocast
    from cora_kit.train.stages import STEP_FNS

    cfg = getattr(model.config.stages, f"stage{stage}")
    fn = STEP_FNS[stage]

    def step(b: int) -> torch.Tensor:
        with autocast(hidden.device, precision):
            loss, _ = fn(model, hidden.expand(b, *hidden.shape[1:]).clone(), [ITEM] * b, cfg)
        loss.backward()
        return loss

    return step


def measure_stage(model: Any, stage: int, device: torch.device, precision: str, peak: float | None,
                  reps: int, profile_below_mfu: float | None = None) -> dict[str, Any]:
    """Autobatch choice, then step time, samples/s, peak memory, FLOPs and MFU at it; with
    ``profile_below_mfu``, a profile when the MFU is lower (or unknown)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cora_kit.train.autobatch import search_stage_batch

    cfg = getattr(model.config.stages, f"stage{stage}")
    model.set_stage(stage)
    model.train()
    hidden = stage_hidden(model, stage, device)
    step = make_step(model, stage, hidden, precision)

    def trial(b: int) -> None:
        model.zero_grad(set_to_none=True)
        try:
            step(b)
            sync(device)
        finally:
            model.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        plan = search_stage_batch(lambda b: trial(b), cfg.batch_size, cfg.grad_accum, 1, device.type)
    search_s = time.perf_counter() - t0
    b = plan.micro_batch
    optim = torch.optim.AdamW(model.param_groups(stage, cfg), lr=cfg.lr)

    def full_step() -> None:
        optim.zero_grad(set_to_none=True)
        step(b)
        optim.step()

    full_step()  # warm-up (allocator, kernels)
    with FlopCounterMode(display=False) as counter:
        full_step()
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        full_step()
    sync(device)
    step_s = (time.perf_counter() - t0) / reps
    row: dict[str, Any] = {
        "stage": stage, "micro_batch": b, "grad_accum": plan.grad_accum, "effective": plan.effective,
        "autobatch_rule": plan.rule, "autobatch_search_s": round(search_s, 1), "step_s": round(step_s, 4),
        "samples_per_s": round(b / step_s, 3), "flops_per_step": flops,
        "tflops": round(flops / step_s / 1e12, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }
    row["mfu"] = round(row["tflops"] / peak, 4) if peak else None
    if profile_below_mfu is not None and (row["mfu"] is None or row["mfu"] < profile_below_mfu):
        row["profile"] = profile_steps(full_step, device)
    del optim
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _device_time(event: Any, cuda: bool = True) -> float:
    """Self time of a profiler event on the device (CUDA) or, on a CPU run, on the CPU."""
    attrs = ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)
    for attr in attrs:
        value = getattr(event, attr, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_steps(full_step: Callable[[], None], device: torch.device, steps: int = 2) -> dict[str, Any]:
    """What a step's time goes to: the top ops by device time and the device-busy fraction."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            full_step()
        sync(device)
    wall_us = (time.perf_counter() - t0) * 1e6
    cuda = device.type == "cuda"
    events = sorted(prof.key_averages(), key=lambda e: _device_time(e, cuda), reverse=True)
    kernel_us = sum(_device_time(e) for e in events if "CUDA" in str(getattr(e, "device_type", "")))
    top = [{"op": e.key[:60], "calls": e.count, "device_ms": round(_device_time(e, cuda) / 1e3, 2)}
           for e in events[:12]]
    busy = kernel_us / wall_us if device.type == "cuda" else None
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    say(f"    profile (top ops by {'GPU' if cuda else 'CPU'} self time):")
    for t in top:
        say(f"      {t['device_ms']:>10.2f} ms  {t['calls']:>7}x  {t['op']}")
    if busy is not None:
        say(f"    GPU busy {busy:.0%} of {wall_us / 1e3:.0f} ms wall over {steps} steps; {launches} kernel launches")
    return {"top": top, "gpu_busy_fraction": None if busy is None else round(busy, 3), "kernel_launches": launches,
            "wall_ms": round(wall_us / 1e3, 1)}


def section_resampler(args: argparse.Namespace, device: torch.device, name: str, guard: Guard,
                      result: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    model = build_model(args.preset, device, name, args.overrides)
    say(f"{name}: built {args.preset} preset in {time.perf_counter() - t0:.0f} s;"
        f" resampler backend {model.plugin_metadata()['resampler']['backend']}")
    rows = []
    for stage in (1, 2, 3):
        if not guard.fits(args.stage_cost_s):
            rows.append({"stage": stage, "skipped": f"time guard ({guard.left():.0f} s left)"})
            say(f"  stage {stage}: skipped, time guard")
            continue
        try:
            row = measure_stage(model, stage, device, args.precision, result.get("bf16_peak_tflops"), args.reps,
                                profile_below_mfu=MFU_GOAL_STAGE2 if stage == 2 and guard.fits(60) else None)
        except Exception as exc:  # recorded AND printed: never a silent skip
            traceback.print_exc()
            row = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        say(f"  stage {stage}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "profile"))
    result[name] = {"backend": model.plugin_metadata()["resampler"]["backend"], "stages": rows}
    if name == "bimamba" and guard.fits(30):
        result["encoder_images_per_s"] = round(encoder_images_per_s(model, device), 2)
        say(f"  feature-cache encoder pass (tiler + all encoder blocks, fp32, batch 8):"
            f" {result['encoder_images_per_s']} panoramas/s")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- 2. explain ---------------------------------------------------------------------------


def section_explain(args: argparse.Namespace, device: torch.device, guard: Guard, result: dict[str, Any]) -> None:
    """Torch-scan fwd+bwd at gpu_check's and model_step's shapes, model_step's Stage-1 region
    with the torch scan, and the kernel-launching op counts (meta device) of each."""
    import cora_kit

    sys.path.insert(0, str(HERE))
    from scan_launches import OpCounter

    # the seed config on the GPU; on the CPU smoke a small bimamba (same code path)
    small = {"in_dim": 64, "out_dim": 64, "hidden_dim": 64, "num_layers": 1, "d_state": 8}
    kw, views = ({}, (18, 9)) if args.preset == "paper" else (small, (2, 1))
    width = kw.get("in_dim", 1152)
    out: dict[str, Any] = {}
    torch.manual_seed(0)
    model = cora_kit.create("resampler", "bimamba", backend="torch", **kw).to(device)
    for n in views:
        x = torch.randn(n, 256, width, device=device, requires_grad=True)
        with torch.device("meta"):
            meta = cora_kit.create("resampler", "bimamba", backend="torch", **kw)
            xm = torch.randn(n, 256, width, requires_grad=True)
        counter = OpCounter()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # every op on this thread, where the (thread-local) mode sees it
        try:
            with counter:
                meta(xm, (16, 16)).square().mean().backward()
        finally:
            torch.set_num_threads(threads)
        model(x[:1], (16, 16)).square().mean().backward()  # warm-up (threads, cuBLAS handles)
        sync(device)
        t0 = time.perf_counter()
        model(x, (16, 16)).square().mean().backward()
        sync(device)
        seconds = time.perf_counter() - t0
        out[f"scan_fwd_bwd_{n}_s"] = round(seconds, 3)
        out[f"scan_kernels_{n}"] = counter.kernels
        out[f"us_per_kernel_{n}"] = round(seconds / counter.kernels * 1e6, 2)
        say(f"explain: torch scan fwd+bwd [{n},256,{width}] fp32: {seconds:.3f} s, {counter.kernels:,} kernel ops,"
            f" {seconds / counter.kernels * 1e6:.1f} us per op")
        if not guard.fits(60):
            break
    del model
    if guard.fits(90):  # the scan as it was when model_step.py was measured (git needed)
        try:
            from scan_launches import load_scan

            old = load_scan(args.old_scan_rev)
        except Exception as exc:  # no git / no history on this machine: said, not hidden
            out["old_scan"] = f"not measured: {type(exc).__name__}: {str(exc).strip()[:200]}"
            say(f"explain: old scan ({args.old_scan_rev}) {out['old_scan']}")
        else:
            from cora_kit_builtins.resamplers import mamba_block

            n = views[1]
            original = mamba_block.selective_scan
            mamba_block.selective_scan = old.selective_scan
            try:
                torch.manual_seed(0)
                model = cora_kit.create("resampler", "bimamba", backend="torch", chunk=16, **kw).to(device)
                x = torch.randn(n, 256, width, device=device, requires_grad=True)
                model(x[:1], (16, 16)).square().mean().backward()
                sync(device)
                t0 = time.perf_counter()
                model(x, (16, 16)).square().mean().backward()
                sync(device)
                out[f"old_scan_fwd_bwd_{n}_s"] = round(time.perf_counter() - t0, 3)
            finally:
                mamba_block.selective_scan = original
            say(f"explain: scan as of {args.old_scan_rev} (4 views per group, 16-step chunks) fwd+bwd [{n},256,{width}]:"
                f" {out[f'old_scan_fwd_bwd_{n}_s']} s")
            del model
    if guard.fits(120):  # model_step.py's Stage-1 region at batch 1, fp32, torch scan forced
        m = build_model(args.preset, device, "bimamba", [*args.overrides, "model.resampler.options.backend=torch"])
        m.set_stage(1)
        m.train()
        opt = torch.optim.AdamW(m.param_groups(1, m.config.stages.stage1))
        erp = torch.rand(1, 3, 256, 512, device=device)
        with torch.no_grad():
            hidden = m.encode_frozen(m.tile(erp), 1)  # all 9 views, as model_step.py does

        def region() -> None:
            loss = m.overlap_loss(m.resample(m.encode_trainable(hidden, 1)))[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        region()
        sync(device)
        t0 = time.perf_counter()
        region()
        sync(device)
        out["model_step_stage1_torch_scan_s"] = round(time.perf_counter() - t0, 3)
        say(f"explain: model_step.py's Stage-1 step (batch 1, 9 views, fp32) with today's torch scan:"
            f" {out['model_step_stage1_torch_scan_s']} s (RESULTS.md recorded 0.588 s)")
        del m, opt
    result["explain"] = out
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- 4. a real run ------------------------------------------------------------------------


def section_run(args: argparse.Namespace, guard: Guard, result: dict[str, Any]) -> None:
    out = Path(tempfile.mkdtemp(prefix="gpu_paper_run_"))
    n = 8 if args.cpu_smoke else 16
    size = "height=64,width=128" if args.cpu_smoke else "height=512,width=1024"
    h, w = (64, 128) if args.cpu_smoke else (512, 1024)
    sets = [f"data.synth_dir={out / 'synth'}", f"data.synth.n_train={n}", "data.synth.n_val=4", "data.synth.n_test=4",
            f"data.synth.height={h}", f"data.synth.width={w}", "eval.metrics=[sacrebleu]", "eval.max_new_tokens=8",
            *[f"stages.stage{k}.max_steps=3" for k in (1, 2, 3)], *args.overrides]
    if args.preset == "paper":
        sets += ["model.encoder.options.random_init=true", "model.llm.options.random_init=true"]
    cmd = [sys.executable, "-m", "cora_kit", "run", "--preset", args.preset, "--batch-size", "auto", "--plain",
           "--name", "gpu-paper", "--out", str(out / "runs")]
    for s in sets:
        cmd += ["--set", s]
    say(f"run: {' '.join(cmd[2:])}  (synthetic {n} train, {size})")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        say(f"  | {line.rstrip()}")
        if not guard.fits(5):
            proc.kill()
            break
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    run_dir = out / "runs" / "gpu-paper"
    scores = run_dir / "scores.json"
    result["run"] = {"returncode": rc, "wall_s": round(seconds, 1), "run_dir": str(run_dir),
                     "scores": json.loads(scores.read_text()) if scores.is_file() else None,
                     "last_lines": lines[-5:]}
    say(f"run: exit {rc} in {seconds:.0f} s; scores.json {'written' if scores.is_file() else 'MISSING'}")


# --- 5. epoch estimate --------------------------------------------------------------------


def encoder_images_per_s(model: Any, device: torch.device) -> float:
    """The feature cache's frozen-encoder pass (tiler + every encoder block, fp32, batch 8)."""
    model.eval()
    erp = torch.rand(8, 3, 512, 1024, device=device)
    with torch.no_grad():
        model.encode_frozen(model.tile(erp[:1]), 1)
        sync(device)
        t0 = time.perf_counter()
        model.encode_frozen(model.tile(erp), 1)
        sync(device)
    return 8 / (time.perf_counter() - t0)


def section_epoch(result: dict[str, Any]) -> None:
    rows = (result.get("bimamba") or {}).get("stages", [])
    per = {r["stage"]: r.get("samples_per_s") for r in rows}
    enc = result.get("encoder_images_per_s") or math.nan
    stages = {f"stage{k}_s": (QUIC360_TRAIN / v if v else math.nan) for k, v in per.items()}
    total = QUIC360_TRAIN / enc + sum(stages.values())
    result["epoch_quic360"] = {"train_samples": QUIC360_TRAIN, "encoder_images_per_s": round(enc, 2),
                               "cache_fill_s": round(QUIC360_TRAIN / enc, 1),
                               **{k: round(v, 1) for k, v in stages.items()}, "total_s": round(total, 1)}
    say(f"epoch: QuIC-360 ({QUIC360_TRAIN} samples), bimamba, one epoch per stage: {total / 60:.1f} min "
        f"(cache fill {QUIC360_TRAIN / enc:.0f} s, " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()) + ")")


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=540.0, help="internal time guard (seconds)")
    ap.add_argument("--mamba-sdist", default=None, help="mamba-ssm sdist to build the CUDA scan from (no network)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the card (MFU)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: explain, bimamba, run, mlp, epoch")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per stage (default 5; smoke 1)")
    ap.add_argument("--old-scan-rev", default="fa4ea0a", help="git revision of the scan model_step.py ran (explain)")
    ap.add_argument("--stage-cost-s", type=float, default=40.0, help="time a stage measurement needs (guard)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny preset on the CPU: checks the code paths")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override for every model")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    guard = Guard(args.budget_s)
    result: dict[str, Any] = {"bench": "gpu_paper"}
    if not torch.cuda.is_available() and not args.cpu_smoke:
        result["status"] = "skipped: no CUDA device (torch.cuda.is_available() is False); --cpu-smoke runs it on the CPU"
        say(json.dumps(result))
        return 0
    device = torch.device("cuda" if not args.cpu_smoke else "cpu")
    args.preset = "tiny" if args.cpu_smoke else "paper"
    args.precision = "bf16"  # autocast: what precision auto gives on CUDA; on the CPU the same code path
    args.reps = args.reps or (1 if args.cpu_smoke else 5)
    result.update(preset=args.preset, precision="bf16 autocast", budget_s=args.budget_s)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sections: list[tuple[str, Callable[[], None], float]] = [
        ("env", lambda: section_env(args, device, result), 0),
        ("explain", lambda: section_explain(args, device, guard, result), 90),
        ("bimamba", lambda: section_resampler(args, device, "bimamba", guard, result), 120),
        ("run", lambda: section_run(args, guard, result), 90),
        ("mlp", lambda: section_resampler(args, device, "mlp", guard, result), 90),
        ("epoch", lambda: section_epoch(result), 0),
    ]
    failed = []
    for name, fn, cost in sections:
        if name in skip:
            result.setdefault("skipped", {})[name] = "--skip"
            continue
        if not guard.fits(cost):
            result.setdefault("skipped", {})[name] = f"time guard: {guard.left():.0f} s left, needs ~{cost:.0f} s"
            say(f"{name}: skipped, {result['skipped'][name]}")
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # loud: traceback printed, recorded, exit status 1
            traceback.print_exc()
            result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            failed.append(name)
        result.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
        say(f"# partial: {json.dumps(result, default=str)}")
    result["status"] = "ok" if not failed else f"errors in {', '.join(failed)}"
    result["wall_s"] = round(time.perf_counter() - guard.start, 1)
    say(json.dumps(result, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
