"""GPU check: bimamba's mamba-ssm CUDA backend against its torch-scan backend.

    pip install mamba-ssm causal-conv1d   # on the GPU machine, if missing
    python benchmarks/gpu_check.py [--budget-s 420] [--views 18]

On one CUDA device, with the same weights and input ([18, 256, 1152] -> bimamba at the
seed config), compares the two backends' outputs and gradients (max abs error) and
times forward+backward of each. Whole-model step times, memory and FLOP utilisation of
the paper preset are ``benchmarks/gpu_paper.py``'s job. An internal time guard skips
what would not fit in ``--budget-s``. Without CUDA or mamba-ssm it says so and exits 0;
an error in the check prints its traceback, is recorded in the JSON and exits 1. The
last line is always one JSON object with "bench": "gpu_check".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Any


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def _fwd_bwd(model, x, grid, gy):
    import torch

    x.grad = None
    model.zero_grad(set_to_none=True)
    _sync()
    t0 = time.perf_counter()
    y = model(x, grid)
    y.backward(gy)
    _sync()
    return time.perf_counter() - t0, y.detach()


def _max_err(a, b) -> float:
    return float((a.float() - b.float()).abs().max().item())


def check_backends(n: int, deadline: float, result: dict[str, Any]) -> None:
    import torch

    import cora_kit

    grid = (16, 16)
    torch.manual_seed(0)
    ref = cora_kit.create("resampler", "bimamba", backend="torch").cuda()
    cuda = cora_kit.create("resampler", "bimamba", backend="cuda").cuda()
    cuda.load_state_dict(ref.state_dict())
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(n, 256, 1152, device="cuda", generator=g, requires_grad=True)
    gy = torch.randn(n, 256, 1024, device="cuda", generator=g)

    # CUDA: warm-up (kernel compile/autotune) then best of 3
    _fwd_bwd(cuda, x, grid, gy)
    times = [_fwd_bwd(cuda, x, grid, gy)[0] for _ in range(3)]
    t_cuda, y_cuda = min(times), cuda(x, grid).detach()
    result["backend_cuda_model"] = cuda.backend
    x.grad = None
    cuda.zero_grad(set_to_none=True)
    cuda(x, grid).backward(gy)
    gx_cuda = x.grad.clone()
    grads_cuda = {k: p.grad.clone() for k, p in cuda.named_parameters()}
    result["cuda_fwd_bwd_s"] = round(t_cuda, 4)
    result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    if time.perf_counter() > deadline:
        result["torch_skipped"] = "time guard reached before the torch-scan run"
        return
    torch.cuda.reset_peak_memory_stats()
    t_torch, y_torch = _fwd_bwd(ref, x, grid, gy)  # one run: it is the slow side
    if time.perf_counter() + t_torch < deadline:
        t_torch = min(t_torch, _fwd_bwd(ref, x, grid, gy)[0])
    gx_torch = x.grad.clone()
    result["torch_fwd_bwd_s"] = round(t_torch, 4)
    result["torch_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["speedup_cuda_vs_torch"] = round(t_torch / t_cuda, 2)
    result["max_abs_err_fwd"] = _max_err(y_cuda, y_torch)
    result["max_abs_err_grad_x"] = _max_err(gx_cuda, gx_torch)
    worst, worst_name, worst_rel = 0.0, "", 0.0
    for k, p in ref.named_parameters():
        e = _max_err(grads_cuda[k], p.grad)
        if e > worst:
            worst, worst_name = e, k
            worst_rel = e / max(float(p.grad.abs().max().item()), 1e-12)
    result["max_abs_err_grad_params"] = worst
    result["worst_param"] = worst_name
    result["worst_param_rel_err"] = worst_rel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=420.0, help="internal time guard (seconds)")
    ap.add_argument("--views", type=int, default=18, help="N of the [N, 256, 1152] input")
    args = ap.parse_args()
    start = time.perf_counter()
    deadline = start + args.budget_s
    result: dict[str, Any] = {"bench": "gpu_check", "views": args.views}
    import torch

    result["torch"] = torch.__version__
    if not torch.cuda.is_available():
        result["status"] = "skipped: no CUDA device (torch.cuda.is_available() is False)"
    else:
        result["device"] = torch.cuda.get_device_name(0)
        from cora_kit_builtins.resamplers.mamba_block import mamba_ssm_kernels

        scan_fn, conv_fn, reason = mamba_ssm_kernels()
        result["causal_conv1d"] = conv_fn is not None
        if scan_fn is None:
            result["status"] = f"skipped: {reason} (pip install mamba-ssm causal-conv1d)"
        else:
            try:
                check_backends(args.views, deadline - 60, result)
                result["status"] = "ok"
            except Exception as exc:  # loud: traceback, recorded, exit status 1
                traceback.print_exc()
                result["status"] = f"error: {type(exc).__name__}: {exc}"
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"gpu_check on {result.get('device', 'no CUDA device')}: {result['status']}")
    rows = [
        ("bimamba fwd+bwd, mamba-ssm CUDA (s)", "cuda_fwd_bwd_s"),
        ("bimamba fwd+bwd, torch scan on GPU (s)", "torch_fwd_bwd_s"),
        ("speedup CUDA vs torch scan", "speedup_cuda_vs_torch"),
        ("max abs err, output", "max_abs_err_fwd"),
        ("max abs err, dL/dx", "max_abs_err_grad_x"),
        ("max abs err, parameter grads", "max_abs_err_grad_params"),
        ("  worst parameter (relative err)", "worst_param_rel_err"),
        ("peak GiB CUDA / torch", None),
    ]
    for label, key in rows:
        if key is None:
            val = f"{result.get('cuda_peak_gib', '-')} / {result.get('torch_peak_gib', '-')}"
        else:
            val = result.get(key, "-")
        print(f"  {label:<42}{val}")
    if "torch_skipped" in result:
        print(f"  torch_skipped: {result['torch_skipped']}")
    print(json.dumps(result))
    return 1 if str(result["status"]).startswith("error") else 0


if __name__ == "__main__":
    sys.exit(main())
