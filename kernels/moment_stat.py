"""Triton kernels of lejepa's moment-family statistics, BLOCK_S adjacent columns per program: the Triton twin
of ``csrc/moment_stat*`` (same statistic ids, same formulas; definitions in ``fused_sigreg/univariate.py``).

Samples (B, N, K) float32 as ``x @ W`` writes them, any N. Forward (``moment_stat_kernel``): one walk over
each program's columns in BLOCK_N-row chunks summing the powers of d = x - c in float64 (a (BLOCK_P,
BLOCK_S) tile, row q holding sum d^(q+1); c the column's first value for VCReg and Extended Jarque-Bera, 0
for Moments' raw moments), then per column the statistic and the coefficients of its gradient, a
polynomial in d (``csrc/moment_stat.h`` derives it). Backward (``moment_stat_backward_kernel``): one more
walk writing grad_out times that polynomial at every row.
"""

import triton
import triton.language as tl

MOMENTS = tl.constexpr(0)
VCREG = tl.constexpr(1)
EXTENDED_JARQUE_BERA = tl.constexpr(2)
_SD_FLOOR = tl.constexpr(9.99999993922529029e-09)  # float32(1e-8): the reference's clamp of the sd
_INV_E = tl.constexpr(0.36787944117144233)


@triton.jit
def _row(tile, index, q):
    """Row q of a (BLOCK_P, BLOCK_S) tile, as a (BLOCK_S,) vector."""
    return tl.sum(tl.where(index[:, None] == q, tile, 0.0), axis=0)


@triton.jit
def _sgn(v):
    """sign(v), 0 at 0 and NaN: the gradient torch's abs passes."""
    return tl.where(v > 0.0, 1.0, tl.where(v < 0.0, -1.0, 0.0))


@triton.jit
def _chunk(base, start, cols, col_ok, N, K, BLOCK_N: tl.constexpr):
    """Offsets and mask of rows start .. start + BLOCK_N of the program's columns."""
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < N) & col_ok[None, :]
    return base + rows[:, None].to(tl.int64) * K + cols[None, :], mask


@triton.jit(do_not_specialize=["N", "K", "closed"])
def moment_stat_kernel(
    proj_ptr,
    value_ptr,
    coef_ptr,
    centre_ptr,
    N,
    K,
    closed,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_P: tl.constexpr,
    STAT: tl.constexpr,
    ORDER: tl.constexpr,
    DEGREE: tl.constexpr,
):
    """Grid (ceil(K / BLOCK_S), B). proj (B, N, K) fp32 -> value and centre (B, K) fp32, coef (B, DEGREE, K)
    fp64. ORDER: the highest power summed (Moments' k_max; 2 for VCReg, 4 for Extended Jarque-Bera),
    ORDER <= BLOCK_P; DEGREE: the gradient polynomial's coefficients (k_max for Moments, 4 otherwise).
    closed (0 / 1): torch's clamp passes the gradient at its bound."""
    batch = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    col_ok = cols < K
    base = batch * N * K
    n = N.to(tl.float64)
    c = tl.zeros([BLOCK_S], tl.float32)
    if STAT != MOMENTS:  # the first row: deviations on the spread's scale
        c = tl.load(proj_ptr + base + cols, mask=col_ok, other=0.0)
    order = tl.arange(0, BLOCK_P)
    sums = tl.zeros([BLOCK_P, BLOCK_S], tl.float64)
    for start in range(0, N, BLOCK_N):
        at, mask = _chunk(base, start, cols, col_ok, N, K, BLOCK_N)
        d = tl.where(mask, tl.load(proj_ptr + at, mask=mask, other=0.0) - c[None, :], 0.0).to(tl.float64)
        power = d
        for q in tl.static_range(ORDER):
            sums += tl.where(order[:, None] == q, tl.sum(power, axis=0)[None, :], 0.0)
            power = power * d
    coef = tl.zeros([BLOCK_P, BLOCK_S], tl.float64)
    if STAT == MOMENTS:
        m1 = _row(sums, order, 0) / n
        value = tl.abs(m1)
        coef = tl.where(order[:, None] == 0, (_sgn(m1) / n)[None, :], coef)
        gauss = tl.full([BLOCK_S], 1.0, tl.float64)  # (k - 1)!! for even k
        weight = tl.full([BLOCK_S], _INV_E, tl.float64)  # e^-k
        for k in tl.static_range(2, ORDER + 1):
            weight = weight * _INV_E
            gap = _row(sums, order, k - 1) / n
            if k % 2 == 0:
                gauss = gauss * (k - 1)
                gap = gap - gauss
            value += weight * tl.abs(gap)
            coef = tl.where(order[:, None] == k - 1, (weight * _sgn(gap) * k / n)[None, :], coef)
    else:
        delta = _row(sums, order, 0) / n
        d2 = delta * delta
        t2 = _row(sums, order, 1) / n
        mu = c.to(tl.float64) + delta
        m2 = t2 - d2
        v = m2 * n / (n - 1.0)  # unbiased variance (NaN at N = 1, as torch's var)
        value = mu * mu * n / v + (v - 1.0) * (v - 1.0) * ((n - 1.0) / 2.0)
        g_mu = 2.0 * mu * n / v
        g_v = -mu * mu * n / (v * v) + (v - 1.0) * (n - 1.0)
        g3 = tl.zeros([BLOCK_S], tl.float64)
        g4 = tl.zeros([BLOCK_S], tl.float64)
        m3 = tl.zeros([BLOCK_S], tl.float64)
        if STAT == EXTENDED_JARQUE_BERA:
            t3 = _row(sums, order, 2) / n
            t4 = _row(sums, order, 3) / n
            m3 = t3 - 3.0 * delta * t2 + 2.0 * d2 * delta
            m4 = t4 - 4.0 * delta * t3 + 6.0 * d2 * t2 - 3.0 * d2 * d2
            s = tl.sqrt(v)
            passes = (s > _SD_FLOOR) | ((closed != 0) & (s == _SD_FLOOR))
            sc = tl.where(s > _SD_FLOOR, s, _SD_FLOOR)
            s3 = sc * sc * sc
            s4 = s3 * sc
            skew = m3 / s3
            kurt = m4 / s4
            value += n / 6.0 * (skew * skew + 0.25 * (kurt - 3.0) * (kurt - 3.0))
            g3 = n * skew / (3.0 * s3)
            g4 = n * (kurt - 3.0) / (12.0 * s4)
            g_sc = -(n / sc) * (skew * skew + (kurt - 3.0) * kurt / 3.0)
            # where the clamp holds, the reference multiplies sqrt's derivative by 0 (0 * inf = NaN at v = 0)
            g_v += g_sc * tl.where(passes, 1.0, 0.0) * (0.5 / s)
        g2 = g_v * n / (n - 1.0)
        b0 = (g_mu - 3.0 * g3 * m2 - 4.0 * g4 * m3) / n
        b1 = 2.0 * g2 / n
        b2 = 3.0 * g3 / n
        b3 = 4.0 * g4 / n
        # sum_q b_q (d - delta)^q as sum_q a_q d^q
        coef = tl.where(order[:, None] == 0, (b0 - b1 * delta + b2 * d2 - b3 * d2 * delta)[None, :], coef)
        coef = tl.where(order[:, None] == 1, (b1 - 2.0 * b2 * delta + 3.0 * b3 * d2)[None, :], coef)
        coef = tl.where(order[:, None] == 2, (b2 - 3.0 * b3 * delta)[None, :], coef)
        coef = tl.where(order[:, None] == 3, b3[None, :], coef)
    tl.store(value_ptr + batch * K + cols, value.to(tl.float32), mask=col_ok)
    tl.store(centre_ptr + batch * K + cols, c, mask=col_ok)
    coef_at = (batch * DEGREE + order[:, None]) * K + cols[None, :]
    tl.store(coef_ptr + coef_at, coef, mask=(order[:, None] < DEGREE) & col_ok[None, :])


@triton.jit(do_not_specialize=["N", "K"])
def moment_stat_backward_kernel(
    proj_ptr,
    coef_ptr,
    centre_ptr,
    grad_out_ptr,
    grad_ptr,
    N,
    K,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_P: tl.constexpr,
    DEGREE: tl.constexpr,
):
    """Grid (ceil(K / BLOCK_S), B). grad (B, N, K) fp32 = grad_out (B, K)[:, None] * sum_q coef[:, q]
    (proj - centre)^q, coef (B, DEGREE, K) fp64 as the forward wrote it, DEGREE <= BLOCK_P."""
    batch = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    col_ok = cols < K
    base = batch * N * K
    order = tl.arange(0, BLOCK_P)
    coef_at = (batch * DEGREE + order[:, None]) * K + cols[None, :]
    coef = tl.load(coef_ptr + coef_at, mask=(order[:, None] < DEGREE) & col_ok[None, :], other=0.0)
    c = tl.load(centre_ptr + batch * K + cols, mask=col_ok, other=0.0)
    go = tl.load(grad_out_ptr + batch * K + cols, mask=col_ok, other=0.0).to(tl.float64)
    for start in range(0, N, BLOCK_N):
        at, mask = _chunk(base, start, cols, col_ok, N, K, BLOCK_N)
        d = (tl.load(proj_ptr + at, mask=mask, other=0.0) - c[None, :]).to(tl.float64)
        acc = tl.zeros([BLOCK_N, BLOCK_S], tl.float64) + _row(coef, order, DEGREE - 1)[None, :]
        for j in tl.static_range(1, DEGREE):
            acc = acc * d + _row(coef, order, DEGREE - 1 - j)[None, :]
        tl.store(grad_ptr + at, (acc * go[None, :]).to(tl.float32), mask=mask)
