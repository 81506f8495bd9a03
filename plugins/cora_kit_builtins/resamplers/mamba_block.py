"""One Mamba (S6) mixer block with two interchangeable scan backends.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023).
Parameter names and layouts follow mamba-ssm's ``Mamba`` and mambapy's ``MambaBlock``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so
one state dict runs on either backend and loads into mambapy for comparison.

``forward(x [b, L, d_model]) -> [b, L, d_model]``.

Backends: ``"torch"`` (``selective_scan.chunked_selective_scan``, any device) and
``"cuda"`` (mamba-ssm's ``selective_scan_fn`` + causal-conv1d when importable, CUDA
tensors only). ``"auto"`` picks cuda for CUDA tensors when mamba-ssm imports, else
torch; ``self.backend`` always says which one ran last.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cora_kit.errors import BackendUnavailableError
from cora_kit_builtins.resamplers.selective_scan import selective_scan

BackendName = Literal["auto", "cuda", "torch"]
TORCH_LABEL = "torch scan"
CUDA_LABEL = "mamba-ssm CUDA"


def mamba_ssm_kernels() -> tuple[Any, Any, str]:
    """``(selective_scan_fn, causal_conv1d_fn | None, reason)``; fn is None when missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or triton/CUDA errors raised at import
        return None, None, f"mamba-ssm not importable: {type(exc).__name__}: {exc}"
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
    return selective_scan_fn, causal_conv1d_fn, ""


def auto_backend_label() -> str:
    """What ``backend="auto"`` would run here, with the reason when it is not CUDA."""
    if not torch.cuda.is_available():
        return f"{TORCH_LABEL} (no CUDA device)"
    fn, conv, reason = mamba_ssm_kernels()
    if fn is None:
        return f"{TORCH_LABEL} ({reason})"
    return CUDA_LABEL + (" + causal-conv1d" if conv is not None else "")


def require_cuda_backend() -> None:
    """Raise ``BackendUnavailableError`` unless the mamba-ssm CUDA path can run here."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "bimamba backend 'cuda' needs a CUDA device, and torch.cuda.is_available() is False; "
            "use backend='torch' (or 'auto')"
        )
    fn, _, reason = mamba_ssm_kernels()
    if fn is None:
        raise BackendUnavailableError(
            f"bimamba backend 'cuda' needs mamba-ssm ({reason}); "
            "install it with `pip install cora-kit[cuda]` or use backend='torch'"
        )


class MambaBlock(nn.Module):
    """Mamba mixer: in_proj -> causal depthwise conv -> SiLU -> S6 scan -> gate -> out_proj."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: float = 2.0,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: BackendName = "auto",
        chunk: int = 8,
    ) -> None:
        super().__init__()
        if backend not in ("auto", "cuda", "torch"):
            raise ValueError(f"backend must be 'auto', 'cuda' or 'torch'; got {backend!r}")
        if backend == "cuda":
            require_cuda_backend()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.requested_backend: BackendName = backend
        self.chunk = chunk
        self.backend = CUDA_LABEL if backend == "cuda" else (
            TORCH_LABEL if backend == "torch" else auto_backend_label()
        )
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        self.out_proj = nn.Linear(di, d_model, bias=False)
        # Mamba's initialisation: dt in [dt_min, dt_max] log-uniform, S4D-real A
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(di, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(di))

    def _use_cuda(self, x: torch.Tensor) -> bool:
        if self.requested_backend == "torch":
            return False
        if self.requested_backend == "cuda":
            if not x.is_cuda:
                raise BackendUnavailableError(
                    f"bimamba backend 'cuda' got a {x.device} tensor; move the model and "
                    "inputs to CUDA or use backend='torch'"
                )
            return True
        return x.is_cuda and mamba_ssm_kernels()[0] is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MambaBlock expects [b, L, {self.d_model}]; got {list(x.shape)}")
        if self._use_cuda(x):
            self.backend = CUDA_LABEL
            return self._forward_cuda(x)
        self.backend = TORCH_LABEL
        return self._forward_torch(x)

    def _conv_silu(self, xc: torch.Tensor) -> torch.Tensor:
        """``[b, d_inner, L]`` -> causal depthwise conv + SiLU, same shape."""
        L = xc.shape[-1]
        return F.silu(self.conv1d(xc)[..., :L])

    def _forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x)
        xs, z = xz.chunk(2, dim=-1)  # [b, L, di] each
        xs = self._conv_silu(xs.transpose(1, 2)).transpose(1, 2)
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # [b, L, di], bias added in the scan
        A = -torch.exp(self.A_log.float())
        dtype = torch.promote_types(x.dtype, torch.float32)
        y = selective_scan(
            xs.to(dtype), delta.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype),
            D=self.D.to(dtype), z=z.to(dtype), delta_bias=self.dt_proj.bias.to(dtype),
            delta_softplus=True, chunk=self.chunk,
        )
        return self.out_proj(y.to(x.dtype))

    def _forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        scan_fn, conv_fn, _ = mamba_ssm_kernels()
        xz = self.in_proj(x).transpose(1, 2)  # [b, 2*di, L]
        xs, z = xz.chunk(2, dim=1)
        if conv_fn is not None:
            xs = conv_fn(
                xs.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu"
            )
        else:
            xs = self._conv_silu(xs)
        x_dbl = self.x_proj(xs.transpose(1, 2))  # [b, L, r + 2n]
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2).contiguous()  # [b, di, L]
        A = -torch.exp(self.A_log.float())
        y = scan_fn(
            xs.contiguous(), delta, A, B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(), self.D.float(), z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2).to(x.dtype))
