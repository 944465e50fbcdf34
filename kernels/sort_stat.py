"""Triton kernel of lejepa's EDF-family statistics, BLOCK_S adjacent slices per program: the Triton twin of
``csrc/sort_stat.h`` (same statistic ids, same formulas; definitions in ``fused_sigreg/univariate.py``).

Projections (V, N, K) float32 as ``x @ W`` writes them, N <= 1024 (``configs.MAX_STAT_N``: at 2048 the
Shapiro-Wilk variant spills 8 bytes under triton 3.6); slice s = v * K + k is the column p[v, :, k]. Each
program sorts its columns in registers (``sort_match._sorted_columns``: a stable order, NaN last), forms
the statistic of every column and its gradient in rank order, and writes the gradient at the original
rows, so backward is one multiply. Shapiro-Wilk's 1 - |cos| cancels: its sums are float64; Cramer-von
Mises and Watson sum float32 terms in float64. Anderson-Darling's log Phi(+-x) terms are float64 (-n + sum
cancels about log10(n) digits): with 8 keys per thread that spilled under triton 3.6 at every width, so its
launcher gives it 4 (``configs.F64_STAT_CONFIGS``).

Entropy needs each rank's neighbour m or 2m ranks on: the program writes its sorted columns in rank order
into its own (N, BLOCK_S) block of ``grad`` (no other program touches it), reads them back shifted after a
barrier, does the same with the per-rank slopes, and only then scatters the gradient over that block.
"""

import triton
import triton.language as tl

from .sort_match import _sorted_columns

CRAMER_VON_MISES = tl.constexpr(0)
WATSON = tl.constexpr(1)
ANDERSON_DARLING = tl.constexpr(2)
SHAPIRO_WILK = tl.constexpr(3)
ENTROPY_CENTERED = tl.constexpr(4)
ENTROPY_RIGHT = tl.constexpr(5)

_INV_SQRT2 = tl.constexpr(0.70710678118654752440)
_INV_SQRT2PI = tl.constexpr(0.39894228040143267794)
_HALF_LOG_2PI = tl.constexpr(0.91893853320467274178)
_TAIL = tl.constexpr(3.0)  # lejepa's log Phi switches to its tail forms beyond +-3
_H_NORMAL = tl.constexpr(1.41893853320467274178)  # 0.5 log(2 pi e), the N(0, 1) entropy (added last:
# the interpreter cannot subtract a tensor from a constexpr)


@triton.jit
def _tail_q(y):
    # the square of the Mills-ratio denominator lejepa's tails use
    return 0.656 * y + 0.344 * y * y + 5.334


@triton.jit
def _log_norm_cdf(x, cdf, pdf, closed):
    """(log Phi(x) in float64, its slope in float32) as lejepa computes log Phi (univariate.log_norm_cdf),
    branch by branch; cdf: Phi(x) in float64, pdf: the density at x. The value is what rank weights (up to
    n) multiply: the central log and the left tail (|log Phi| >= 5.4) in float64; the right tail is
    log1p(-g), g <= 0.0016, whose float32 error is ~1e-10 absolute."""
    y = tl.minimum(x, -_TAIL)
    q_left = _tail_q(-y)
    y64 = y.to(tl.float64)
    left = -(y64 * y64) * 0.5 - _HALF_LOG_2PI - 0.5 * tl.log(_tail_q(-y64))
    left_slope = -y + 0.5 * (0.656 - 0.688 * y) / q_left
    z = tl.maximum(x, _TAIL)
    q_right = _tail_q(z)
    g = pdf / tl.sqrt(q_right)  # <= 0.0016 beyond 3: log1p(-g) to float32 by three terms of its series
    right = -g * (1.0 + g * (0.5 + g / 3.0))
    right_slope = g * (z + 0.5 * (0.656 + 0.688 * z) / q_right) / (1.0 - g)
    # at +-3 exactly the reference's clamp decides whether the central slope passes (closed)
    inside = (closed != 0) | ((x != _TAIL) & (x != -_TAIL))
    middle = tl.log(cdf)
    middle_slope = tl.where(inside, pdf / cdf.to(tl.float32), 0.0)
    value = tl.where(x < -_TAIL, left, tl.where(x > _TAIL, right.to(tl.float64), middle))
    slope = tl.where(x < -_TAIL, left_slope, tl.where(x > _TAIL, right_slope, middle_slope))
    return value, slope


@triton.jit
def _passes(d, eps, closed):
    """Where clamp(d, min=eps) passes the gradient: d > eps, and d = eps when torch's clamp is closed."""
    return (d > eps) | ((closed != 0) & (d == eps))


@triton.jit
def _entropy(values, valid, rank, rank_tile, col_ok, scratch, N, K, m, eps, closed, CENTERED: tl.constexpr):
    """(value per column, gradient per rank) of Vasicek's entropy gap; scratch points at the program's
    (N, BLOCK_S) block of grad, rank_tile the rank-order offsets into it."""
    n = N.to(tl.float32)
    gap = 2 * m if CENTERED else m
    # mean and variance in float64: for a column collapsed to within float32's spacing of one value, the
    # float32 deviations would be mostly rounding (the sd enters as log sd)
    s = tl.where(valid, values, 0.0).to(tl.float64)
    mean = tl.sum(s, axis=1) / N
    centred = tl.where(valid, s - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / (N - 1)  # centred is formed again at the end: fewer live registers
    tl.store(scratch + rank_tile, values, mask=valid)
    tl.debug_barrier()
    ahead = (rank + gap < N) & col_ok
    upper = tl.load(scratch + rank_tile + gap * K, mask=ahead, other=0.0)
    d = tl.maximum(upper - values, eps)
    logs = tl.sum(tl.where(ahead, tl.log(d), 0.0), axis=1)
    slope = tl.where(ahead & _passes(upper - values, eps, closed), 1.0 / d, 0.0)
    if CENTERED:
        # ranks 0 and N - 1 of each column (a NaN among them stays NaN, as in the reference)
        first = tl.sum(tl.where(rank == 0, values, 0.0), axis=1)[:, None]
        last = tl.sum(tl.where(rank == N - 1, values, 0.0), axis=1)[:, None]
        # the 2m end spacings: rank r in 1..2m against rank 0, rank r in N-2m-1..N-2 against rank N - 1; their
        # slopes folded into one tile (``own``) and two column sums as soon as each is formed
        low_end = (rank >= 1) & (rank <= 2 * m) & col_ok
        d_end = values - first
        logs += tl.sum(tl.where(low_end, tl.log(tl.maximum(d_end, eps)), 0.0), axis=1)
        own = tl.where(low_end & _passes(d_end, eps, closed), 1.0 / tl.maximum(d_end, eps), 0.0)
        to_first = tl.sum(own, axis=1)
        high_end = (rank >= N - 2 * m - 1) & (rank <= N - 2) & col_ok
        d_end = last - values
        logs += tl.sum(tl.where(high_end, tl.log(tl.maximum(d_end, eps)), 0.0), axis=1)
        slope_high = tl.where(high_end & _passes(d_end, eps, closed), 1.0 / tl.maximum(d_end, eps), 0.0)
        to_last = tl.sum(slope_high, axis=1)
        own -= slope_high
    tl.debug_barrier()  # every neighbour is read before the slopes take the block over
    tl.store(scratch + rank_tile, slope, mask=valid)
    tl.debug_barrier()
    behind = (rank >= gap) & col_ok
    grad = tl.load(scratch + rank_tile - gap * K, mask=behind, other=0.0) - slope
    log_sd = 0.5 * tl.log(var)
    # logs of the scalars taken on a column-shaped tensor: the interpreter's tl.log refuses 0-d operands
    log_n = tl.log(tl.zeros_like(var) + n)
    if CENTERED:
        grad += own + tl.where(rank == 0, -to_first[:, None], 0.0) + tl.where(rank == N - 1, to_last[:, None], 0.0)
        value = tl.exp(log_sd - logs / n - log_n + tl.log(tl.zeros_like(var) + 2.0 * m) + _H_NORMAL)
        outer = value[:, None]
    else:
        value = log_sd - logs / n - log_n + tl.log(tl.zeros_like(var) + m) + _H_NORMAL
        outer = 1.0
    centred = tl.where(valid, values.to(tl.float64) - mean[:, None], 0.0)
    grad = (outer * (-grad / n + centred / ((N - 1) * var[:, None]))).to(tl.float32)
    tl.debug_barrier()  # the slopes are read before the gradient scatter overwrites the block
    return value, grad


@triton.jit(do_not_specialize=["N", "K", "m", "closed"])
def sort_stat_kernel(
    proj_ptr,
    weights_ptr,
    value_ptr,
    grad_ptr,
    N,
    K,
    m,
    eps,
    closed,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    STAT: tl.constexpr,
):
    """Grid (ceil(K / BLOCK_S), V). proj and grad (V, N, K) fp32, value (V, K) fp32; weights (N,) fp32
    (Shapiro-Wilk's coefficients; any pointer otherwise). closed (0 / 1): torch's clamp passes the gradient
    at its bounds. Requires N <= BLOCK_N."""
    view = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    rows = tl.arange(0, BLOCK_N)
    col_ok = cols[:, None] < K
    valid = col_ok & (rows[None, :] < N)
    tile = view * N * K + rows[None, :].to(tl.int64) * K + cols[:, None]  # (BLOCK_S, BLOCK_N) offsets
    values, source_rows = _sorted_columns(tl.load(proj_ptr + tile, mask=valid, other=0.0), valid, rows[None, :])
    rank = rows[None, :]
    n = N.to(tl.float32)
    if STAT == CRAMER_VON_MISES or STAT == WATSON:
        cdf = 0.5 * (1.0 + tl.erf(values * _INV_SQRT2))
        pdf = _INV_SQRT2PI * tl.exp(-0.5 * values * values)
        r = tl.where(valid, cdf - (2.0 * rank + 1.0) / (2.0 * n), 0.0)
        value = tl.sum(r.to(tl.float64) * r, axis=1) / N
        grad = 2.0 * r * pdf / n
        if STAT == WATSON:
            centre = tl.sum(tl.where(valid, cdf, 0.0).to(tl.float64), axis=1) / N - 0.5
            value -= centre * centre
            grad -= (2.0 * centre.to(tl.float32))[:, None] * pdf / n
    elif STAT == ANDERSON_DARLING:
        # -n - sum_i [(2i + 1) log Phi(s_i) + (2n - 2i - 1) log Phi(-s_i)] / n, the CPU op's pairing; Phi(+-x)
        # and the logs in float64 (the sum cancels ~log10(n) digits against n), one side at a time
        e = tl.erf(values.to(tl.float64) * _INV_SQRT2)
        pdf = _INV_SQRT2PI * tl.exp(-0.5 * values * values)
        low = 2.0 * rank.to(tl.float32) + 1.0
        high = 2.0 * (N - rank).to(tl.float32) - 1.0
        a, a_slope = _log_norm_cdf(values, 0.5 * (1.0 + e), pdf, closed)
        terms = tl.where(valid, a * low, 0.0)
        grad = a_slope * low
        b, b_slope = _log_norm_cdf(-values, 0.5 * (1.0 - e), pdf, closed)
        terms += tl.where(valid, b * high, 0.0)
        grad = -(grad - b_slope * high) / n
        value = -N - tl.sum(terms, axis=1) / N
    elif STAT == SHAPIRO_WILK:
        w = tl.load(weights_ptr + rows, mask=rows < N, other=0.0)[None, :]
        s = tl.where(valid, values, 0.0)
        dot = tl.sum(w.to(tl.float64) * s, axis=1)
        norm_s = tl.sqrt(tl.sum(s.to(tl.float64) * s, axis=1))
        norm_a = tl.sqrt(tl.sum(w.to(tl.float64) * w, axis=1))
        ca = tl.maximum(norm_a, eps)
        cs = tl.maximum(norm_s, eps)
        cos = dot / (ca * cs)
        sign = tl.where(cos > 0.0, 1.0, tl.where(cos < 0.0, -1.0, tl.where(cos == 0.0, 0.0, cos)))
        radial = tl.where(norm_s > 0.0, dot / (ca * cs * cs * norm_s), 0.0)
        value = 1.0 - tl.abs(cos)
        grad = (-sign[:, None] * (w / (ca * cs)[:, None] - radial[:, None] * s)).to(tl.float32)
    else:
        value, grad = _entropy(
            values, valid, rank, tile, col_ok, grad_ptr, N, K, m, eps, closed, STAT == ENTROPY_CENTERED
        )
    tl.store(value_ptr + view * K + cols, value.to(tl.float32), mask=cols < K)
    out = view * N * K + source_rows.to(tl.int64) * K + cols[:, None]
    tl.store(grad_ptr + out, grad, mask=valid)
