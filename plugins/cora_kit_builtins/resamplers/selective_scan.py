"""Selective scan (Mamba S6) in PyTorch: chunked, recomputing, memory-light.

The recurrence, per batch ``b``, channel ``d`` and state ``n`` (Gu & Dao, 2023)::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h_{-1} = 0
    y_t = sum_n h_t * C_t

Shapes (this module's layout, time-major inside a batch element)::

    u, delta   [b, L, d]      A  [d, n]      B, C  [b, L, n]      y  [b, L, d]

``ChunkedSelectiveScan`` walks the sequence in chunks of ``T`` steps with a
multiplicative recurrence (exp(delta*A) precomputed per chunk, then one in-place
``addcmul_`` per step), which is stable for any delta >= 0: every factor is in
(0, 1]. Only the state at each chunk boundary is saved ([b, L/T, d, n]); backward
recomputes one chunk at a time and runs the adjoint recurrence, so activation memory
is O(b*d*n*(L/T + T)) instead of O(b*L*d*n). Work is tiled over (batch group, channel)
so that one step's state stays near L2 size; the chunk buffers are allocated once per
call and reused (large fresh allocations cost page faults on glibc). Internally the
layout is time-major ``[L, b, ...]`` so every step reads contiguous memory.

``selective_scan_reference`` is the plain sequential loop used to test it.
(``ChunkedSelectiveScan.backward`` is one ~75-line function on purpose: the adjoint
recurrence reuses its preallocated chunk buffers, which a split would pass around by the dozen.)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

#: target elements of one [T, batch_group, d_tile, n] chunk buffer (4 MiB in float32:
#: at the seed shape and T=8 one step's state is [1, 2048, 64], 512 KiB, L2-sized)
_TILE_ELEMS = 1 << 20


def _check(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"selective scan expects u and delta [b,L,d] of equal shape; got {list(u.shape)} and {list(delta.shape)}"
        )
    b, L, d = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective scan expects A [d={d}, n]; got {list(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (b, L, n):
            raise ValueError(f"selective scan expects {name} [b={b}, L={L}, n={n}]; got {list(t.shape)}")


def _tiles(b: int, d: int, n: int, T: int, workers: int = 1) -> tuple[int, int]:
    """``(batch_group, channel_width)``: one ``[T, bg, w, n]`` buffer is ~``_TILE_ELEMS``,
    and there are at least ``workers`` batch groups when ``b`` allows."""
    per_step = max(1, _TILE_ELEMS // max(1, T * n))
    if per_step >= d:
        bg = max(1, min(b, per_step // d))
        return max(1, min(bg, math.ceil(b / max(1, workers)))), d
    return 1, max(1, per_step)


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """``[b, L, ...]`` -> contiguous ``[L, b, ...]``."""
    return t.transpose(0, 1).contiguous()


@contextlib.contextmanager
def _single_threaded_ops() -> Iterator[int]:
    """Yield the caller's intra-op thread count while ops run single-threaded.

    The scan issues thousands of mid-sized ops; an OpenMP barrier per op costs more than
    the op itself once the cores are shared (measured: 2-thread addcmul_ on 2 MiB ran
    20x slower than 1-thread on a loaded 2-core machine). The scan therefore runs its
    batch groups on Python threads (ops release the GIL), each op single-threaded.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield before
    finally:
        torch.set_num_threads(before)


def _run_groups(fn, b: int, bg: int, workers: int) -> list:
    """``fn(b0, b1)`` for every batch group, on up to ``workers`` threads."""
    groups = [(b0, min(b, b0 + bg)) for b0 in range(0, b, bg)]

    def call(g: tuple[int, int]):
        with torch.no_grad():  # grad mode is thread-local
            return fn(*g)

    if workers <= 1 or len(groups) == 1:
        return [call(g) for g in groups]
    with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
        return list(pool.map(call, groups))


class _ChunkedScanFn(torch.autograd.Function):
    """Inputs in ``[L, b, ...]`` (time-major) layout; see ``chunked_selective_scan``."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk: int):  # type: ignore[override]
        L, b, d = u.shape
        n = A.shape[1]
        T = max(1, min(chunk, L))
        nchunks = math.ceil(L / T)
        y = u.new_empty(L, b, d)
        states = u.new_empty(nchunks, b, d, n)  # h_{start-1} of every chunk
        with _single_threaded_ops() as workers:
            bg, dw = _tiles(b, d, n, T, workers)
            du = delta * u

            def group(b0: int, b1: int) -> None:
                m = b1 - b0
                buf_a = u.new_empty(T, m, dw, n)
                buf_h = u.new_empty(T, m, dw, n)
                buf_y = u.new_empty(T, m, dw, 1)
                for d0 in range(0, d, dw):
                    d1 = min(d, d0 + dw)
                    w = d1 - d0
                    Ad = A[d0:d1]
                    states[0, b0:b1, d0:d1].zero_()
                    hs = buf_h
                    k_prev = 0
                    for c in range(nchunks):
                        t0, t1 = c * T, min(L, (c + 1) * T)
                        k = t1 - t0
                        h = states[c, b0:b1, d0:d1]
                        if c > 0:
                            h.copy_(hs[k_prev - 1])
                        a = buf_a[:k, :, :w]
                        hs = buf_h[:k, :, :w]
                        torch.mul(delta[t0:t1, b0:b1, d0:d1, None], Ad, out=a)
                        a.exp_()
                        torch.mul(du[t0:t1, b0:b1, d0:d1, None], B[t0:t1, b0:b1, None, :], out=hs)
                        hs[0].addcmul_(a[0], h)
                        for t in range(1, k):
                            hs[t].addcmul_(a[t], hs[t - 1])
                        k_prev = k
                        torch.matmul(hs, C[t0:t1, b0:b1, :, None], out=buf_y[:k, :, :w])
                        y[t0:t1, b0:b1, d0:d1] = buf_y[:k, :, :w, 0]

            _run_groups(group, b, bg, workers)
        ctx.save_for_backward(u, delta, A, B, C, states)
        ctx.chunk = T
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        u, delta, A, B, C, states = ctx.saved_tensors
        T = ctx.chunk
        L, b, d = u.shape
        n = A.shape[1]
        nchunks = states.shape[0]
        gy = gy.contiguous()
        g_B = torch.zeros_like(B)
        g_C = torch.zeros_like(C)
        GB = u.new_empty(L, b, d)  # sum_n gh * B
        XA = u.new_empty(L, b, d)  # sum_n gh * h_prev * a * A
        with _single_threaded_ops() as workers:
            bg, dw = _tiles(b, d, n, T, workers)
            du = delta * u

            def group(b0: int, b1: int) -> torch.Tensor:
                m = b1 - b0
                g_A = torch.zeros_like(A)  # per group: summed after the threads finish
                buf_a = u.new_empty(T, m, dw, n)
                buf_h = u.new_empty(T + 1, m, dw, n)  # [h_{start-1}, h_start, ..., h_end]
                buf_g = u.new_empty(T, m, dw, n)
                buf_x = u.new_empty(T, m, dw, n)
                tmp_n = u.new_empty(T, m, 1, n)
                tmp_d = u.new_empty(T, m, dw, 1)
                for d0 in range(0, d, dw):
                    d1 = min(d, d0 + dw)
                    w = d1 - d0
                    Ad = A[d0:d1]
                    carry = None  # a_{t+1} * gh_{t+1} flowing into the previous chunk
                    for c in range(nchunks - 1, -1, -1):
                        t0, t1 = c * T, min(L, (c + 1) * T)
                        k = t1 - t0
                        a = buf_a[:k, :, :w]
                        hs = buf_h[: k + 1, :, :w]
                        g = buf_g[:k, :, :w]
                        x = buf_x[:k, :, :w]
                        tn = tmp_n[:k]
                        td = tmp_d[:k, :, :w]
                        # recompute the chunk's forward
                        torch.mul(delta[t0:t1, b0:b1, d0:d1, None], Ad, out=a)
                        a.exp_()
                        hs[0].copy_(states[c, b0:b1, d0:d1])
                        torch.mul(du[t0:t1, b0:b1, d0:d1, None], B[t0:t1, b0:b1, None, :], out=hs[1:])
                        for t in range(1, k + 1):
                            hs[t].addcmul_(a[t - 1], hs[t - 1])
                        # gC_t = sum_d gy_t h_t (accumulated over channel tiles)
                        gy_c = gy[t0:t1, b0:b1, d0:d1]
                        torch.matmul(gy_c[:, :, None, :], hs[1:], out=tn)
                        g_C[t0:t1, b0:b1] += tn[:, :, 0]
                        # adjoint recurrence: gh_t = gy_t C_t + a_{t+1} gh_{t+1}
                        torch.mul(gy_c[..., None], C[t0:t1, b0:b1, None, :], out=g)
                        if carry is not None:
                            g[k - 1].add_(carry)
                        for t in range(k - 2, -1, -1):
                            g[t].addcmul_(a[t + 1], g[t + 1])
                        carry = a[0] * g[0]
                        # x = gh * h_prev * a  -> grads of delta (through a) and A
                        torch.mul(g, hs[:k], out=x)
                        x.mul_(a)
                        torch.mul(x, delta[t0:t1, b0:b1, d0:d1, None], out=a)  # a is free now
                        g_A[d0:d1] += a.sum((0, 1))
                        x.mul_(Ad)
                        torch.sum(x, -1, out=td[..., 0])
                        XA[t0:t1, b0:b1, d0:d1] = td[..., 0]
                        # sum_n gh * B_t, and gB_t = sum_d gh (delta u)_t
                        torch.matmul(g, B[t0:t1, b0:b1, :, None], out=td)
                        GB[t0:t1, b0:b1, d0:d1] = td[..., 0]
                        torch.matmul(du[t0:t1, b0:b1, None, d0:d1], g, out=tn)
                        g_B[t0:t1, b0:b1] += tn[:, :, 0]
                return g_A

            g_A = torch.stack(_run_groups(group, b, bg, workers)).sum(0)
        g_u = delta * GB
        g_delta = torch.addcmul(XA, u, GB)
        return g_u, g_delta, g_A, g_B, g_C, None


def chunked_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int = 8,
) -> torch.Tensor:
    """``sum_n h_t C_t`` for the S6 recurrence; see the module docstring for shapes.

    ``delta`` must already be positive (softplus applied). Returns ``y`` ``[b, L, d]``.
    """
    _check(u, delta, A, B, C)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    u, delta, B, C = (_time_major(t) for t in (u, delta, B, C))
    y = _ChunkedScanFn.apply(u, delta, A.contiguous(), B, C, int(chunk))
    return y.transpose(0, 1)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int = 8,
) -> torch.Tensor:
    """Full S6 with mamba-ssm's extras, in this module's ``[b, L, d]`` layout.

    ``delta <- softplus(delta + delta_bias)``; ``y = scan + D*u``; ``y *= silu(z)``.
    """
    if delta_bias is not None:
        delta = delta + delta_bias
    if delta_softplus:
        delta = F.softplus(delta)
    y = chunked_selective_scan(u, delta, A, B, C, chunk=chunk)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_reference(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """Plain sequential loop over time (slow, differentiable by autograd); ``[b, L, d]``."""
    _check(u, delta, A, B, C)
    b, L, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        a = torch.exp(delta[:, t, :, None] * A)
        h = a * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1)
