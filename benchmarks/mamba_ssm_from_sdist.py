"""Device-check helper: make mamba-ssm's ``selective_scan_fn`` importable from its sdist.

The GPU machine lent to this project has CUDA, nvcc, torch and triton but no network and no
mamba-ssm; its sdist builds the CUDA extension for ~8 architectures and every dtype, which
takes far longer than a device check may. This helper compiles only what the check runs
(``selective_scan.cpp`` + the fp32 forward/backward kernels, optionally bf16) for the one
architecture present, loads it lazily (RTLD_LAZY, so the dtype instantiations that were not
built are only an error if called), and registers the sdist's Python package without its
``__init__`` (which imports every Mamba model). Nothing here is used by cora-kit itself.

    python benchmarks/mamba_ssm_from_sdist.py --sdist .whl/mamba_ssm-2.3.2.post1.tar.gz
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import time
import types
from pathlib import Path


def _extract(sdist: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    roots = [p for p in dest.iterdir() if p.is_dir() and (p / "mamba_ssm").is_dir()]
    if not roots:
        raise FileNotFoundError(f"{sdist}: no mamba_ssm package inside")
    return roots[0]


def build_and_register(sdist: str | Path, build_dir: str | Path, with_bf16: bool = False, verbose: bool = False):
    """Compile ``selective_scan_cuda`` for the current GPU and return ``selective_scan_fn``."""
    import torch
    from torch.utils.cpp_extension import load

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: the selective_scan CUDA kernels cannot be built here")
    build_dir = Path(build_dir)
    root = _extract(Path(sdist), build_dir / "src")
    csrc = root / "csrc" / "selective_scan"
    names = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_bwd_fp32_real.cu"]
    if with_bf16:
        names += ["selective_scan_fwd_bf16.cu", "selective_scan_bwd_bf16_real.cu"]
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    flags = [
        "-O3", "-std=c++17",
        "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
        "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
        "-gencode", f"arch=compute_{arch},code=sm_{arch}",
    ]
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    out = build_dir / "ext"
    out.mkdir(parents=True, exist_ok=True)
    sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)
    start = time.perf_counter()
    module = load(
        name="selective_scan_cuda",
        sources=[str(csrc / n) for n in names],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=flags,
        extra_include_paths=[str(csrc)],
        build_directory=str(out),
        verbose=verbose,
    )
    sys.modules["selective_scan_cuda"] = module  # load() returns it; the interface imports it by name
    print(f"built selective_scan_cuda for sm_{arch} in {time.perf_counter() - start:.0f} s", flush=True)
    package = types.ModuleType("mamba_ssm")
    package.__path__ = [str(root / "mamba_ssm")]  # the sdist's package, without its __init__
    sys.modules["mamba_ssm"] = package
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", required=True)
    parser.add_argument("--build-dir", default="/tmp/mamba_build")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    fn = build_and_register(args.sdist, args.build_dir, args.bf16, verbose=True)
    print("selective_scan_fn:", fn)


if __name__ == "__main__":
    main()
