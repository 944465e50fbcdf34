"""Triton kernels of SIGReg's ECF passes over stored projections P (V, N, K) fp32, the CUDA twins of
``csrc/sigreg_cpu.cpp``: the projections and dX = dP A^T are matmuls done by the caller (cuBLAS
through torch), so the kernels are elementwise passes with the knot walk of ``common.py``
(angle-addition recurrence, restarted every RESEED knots but the last).

Each program owns BLOCK_K adjacent columns and walks rows in chunks of BLOCK_N: loads are coalesced
along K, and with BLOCK_K = 32 x num_warps every thread holds whole columns of a chunk, so the sum
over the chunk's rows stays inside a thread (no shuffles, no barriers).
"""

import triton
import triton.language as tl

from .common import KNOT_UNROLL, block_end, dp_from_knots, restart

_SIZES = ["N", "K", "T", "rows_per_split", "n_splits"]


@triton.jit(do_not_specialize=_SIZES)
def ecf_sums_kernel(
    p_ptr,
    out_ptr,
    N,
    K,
    T,
    rows_per_split,
    n_splits,
    delta,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    RESEED: tl.constexpr,
):
    """Grid (column tiles, row splits, views). p (V, N, K) fp32; out (V, n_splits, 2, T, K) fp64, written
    whole (no split may be empty): out[v, s, 0, j, k] = sum over split s's rows n of cos(j delta p[v, n,
    k]), [v, s, 1, j, k] the same with sin. Each program owns its (split, column tile) slice of out, so its
    read-modify-writes race with nothing; the first row chunk stores (so out needs no zeroing launch) and
    each later chunk's fp32 sum is added in fp64, so the error does not grow with N."""
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    view = tl.program_id(2).to(tl.int64)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    out = out_ptr + ((view * n_splits + split) * 2 * T) * K + cols
    p_view = p_ptr + view * N * K
    row_begin = split * rows_per_split
    row_end = tl.minimum(row_begin + rows_per_split, N)
    for n0 in range(row_begin, row_end, BLOCK_N):
        later = n0 > row_begin  # the first chunk stores its sums, the later ones add to them
        rows = n0 + tl.arange(0, BLOCK_N)
        ok = (rows[:, None] < row_end) & col_ok[None, :]
        p = tl.load(p_view + rows[:, None].to(tl.int64) * K + cols[None, :], mask=ok, other=0.0)
        theta = p * delta
        c1 = tl.cos(theta)
        s1 = tl.sin(theta)
        # Masked elements start at (0, 0) and stay there under the recurrence: they add nothing.
        c = tl.where(ok, 1.0, 0.0)
        s = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for j0 in range(0, T - 1, RESEED):
            if j0 > 0:
                c, s = restart(p * (j0 * delta), c, s)
                c = tl.where(ok, c, 0.0)
                s = tl.where(ok, s, 0.0)
            for j in tl.range(j0, block_end(j0, T, RESEED), loop_unroll_factor=KNOT_UNROLL):
                cos_sum = tl.load(out + j * K, mask=col_ok & later, other=0.0)
                tl.store(out + j * K, cos_sum + tl.sum(c, axis=0).to(tl.float64), mask=col_ok)
                sin_sum = tl.load(out + (T + j) * K, mask=col_ok & later, other=0.0)
                tl.store(out + (T + j) * K, sin_sum + tl.sum(s, axis=0).to(tl.float64), mask=col_ok)
                c, s = c * c1 - s * s1, s * c1 + c * s1


@triton.jit(do_not_specialize=["N", "K", "T"])
def ecf_grad_kernel(
    p_ptr,
    coef_ptr,
    dp_ptr,
    scale_ptr,
    N,
    K,
    T,
    scale_sv,
    scale_sk,
    delta,
    alpha,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    RESEED: tl.constexpr,
    SCALED: tl.constexpr,
):
    """Grid (row tiles, column tiles, views). p and dp (V, N, K) fp32, coef (V, 2, T, K) fp32:
    dp[v, n, k] = g[v, k] sum_j coef[v, 0, j, k] cos(j delta p[v, n, k]) + coef[v, 1, j, k] sin(j delta p[v, n, k]),
    g = alpha times the (V, K) fp32 scale at scale_ptr with strides (scale_sv, scale_sk) where SCALED (the
    statistic's gradient per slice, in any strides: a reduced statistic's scalar gradient expanded, with
    alpha = 1 / (V K) for a mean), else 1. So backward needs no kernel that multiplies the coefficients
    first, nor one for the mean's backward. dp may be p itself: each program reads its tile before
    it writes it, and tiles do not overlap."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    view = tl.program_id(2).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    ok = (rows[:, None] < N) & col_ok[None, :]
    offsets = view * N * K + rows[:, None].to(tl.int64) * K + cols[None, :]
    p = tl.load(p_ptr + offsets, mask=ok, other=0.0)
    dp = dp_from_knots(p, coef_ptr + view * 2 * T * K + cols, col_ok, K, T, delta, RESEED, KNOT_UNROLL)
    if SCALED:
        g = tl.load(scale_ptr + view * scale_sv + cols.to(tl.int64) * scale_sk, mask=col_ok, other=0.0)
        dp = dp * (g * alpha)[None, :]
    tl.store(dp_ptr + offsets, dp, mask=ok)


@triton.jit(do_not_specialize=["N", "K", "n_splits"])
def ecf_stat_kernel(
    partial_ptr,
    t_ptr,
    phi_ptr,
    w_ptr,
    stat_ptr,
    base_ptr,
    N,
    K,
    n_splits,
    T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Grid (column tiles, views). SIGReg's statistic from ``ecf_sums_kernel``'s partial sums (V, n_splits,
    2, T, K) fp64, the splits added in order (deterministic); t, phi, w the (T,) fp32 quadrature.
    With C_j, S_j the cos / sin means over N rows: stat (V, K) fp32 = N sum_j w_j ((C_j - phi_j)^2 + S_j^2),
    and base (V, 2, T, K) fp32 the coefficients of dstat/dp on cos(t_j p): 2 w_j t_j S_j, and on
    sin(t_j p): -2 w_j t_j (C_j - phi_j) (stat's factor N cancels the 1/N of the means' derivatives)."""
    pid_k = tl.program_id(0)
    view = tl.program_id(1).to(tl.int64)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    n = N.to(tl.float64)
    part = partial_ptr + view * n_splits * 2 * T * K + cols
    base = base_ptr + view * 2 * T * K + cols
    total = tl.zeros((BLOCK_K,), dtype=tl.float64)
    for j in range(T):
        cos_sum = tl.zeros((BLOCK_K,), dtype=tl.float64)
        sin_sum = tl.zeros((BLOCK_K,), dtype=tl.float64)
        for split in range(n_splits):
            cos_sum += tl.load(part + (split * 2 * T + j) * K, mask=col_ok, other=0.0)
            sin_sum += tl.load(part + (split * 2 * T + T + j) * K, mask=col_ok, other=0.0)
        err = cos_sum / n - tl.load(phi_ptr + j).to(tl.float64)
        sine = sin_sum / n
        w = tl.load(w_ptr + j).to(tl.float64)
        total += w * (err * err + sine * sine)
        scale = 2.0 * w * tl.load(t_ptr + j).to(tl.float64)
        tl.store(base + j * K, (scale * sine).to(tl.float32), mask=col_ok)
        tl.store(base + (T + j) * K, (-scale * err).to(tl.float32), mask=col_ok)
    tl.store(stat_ptr + view * K + cols, (total * n).to(tl.float32), mask=col_ok)
