"""Triton kernel of lejepa's per-sample NLL (``fused_sigreg.univariate.nll``), BLOCK_S adjacent slices per
program: the Triton twin of ``csrc/sort_nll_cpu.cpp``.

Projections (V, N, K) float32 as ``x @ W`` writes them, N <= 1024 (``configs.MAX_STAT_N``); slice s = v * K + k
is the column p[v, :, k]. Each program sorts its columns in registers (``sort_match._sorted_columns``: a
stable order, NaN last) and forms rank j's loss -(c_j + j log Phi(x) + (n - 1 - j) log Phi(-x) - x^2 / 2 -
log sqrt(2 pi)) and its slope. log Phi is lejepa's (the CDF's log on [-3, 3], tail forms outside) in float32
as the reference computes it; the terms are summed in float64, where at middle ranks they cancel to ~1/n
of their size. lejepa writes output i = the loss of rank o[i] (o the sort permutation), which depends on
input row o[o[i]] only: the program writes losses, slopes and o in rank order into its own (N, BLOCK_S)
blocks of the outputs (no other program touches them), reads them back at rows o[i] after a barrier, and
after another writes the outputs in place and, at row o[o[i]] of ``source``, the output i it feeds.
"""

import triton
import triton.language as tl

from .sort_match import _sorted_columns
from .sort_stat import _log_norm_cdf

_INV_SQRT2 = tl.constexpr(0.70710678118654752440)
_INV_SQRT2PI = tl.constexpr(0.39894228040143267794)
_HALF_LOG_2PI = tl.constexpr(0.91893853320467274178)


@triton.jit(do_not_specialize=["N", "K", "closed"])
def sort_nll_kernel(
    proj_ptr,
    constant_ptr,
    cutoffs_ptr,
    loss_ptr,
    slope_ptr,
    source_ptr,
    N,
    K,
    closed,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Grid (ceil(K / BLOCK_S), V). proj, loss, slope (V, N, K) fp32, source (V, N, K) int64; constant (N,)
    fp32 (each rank's log multinomial constant); cutoffs (2, N) fp32 when MASKED (NaN strictly inside each
    rank's interval, no slope there). closed (0 / 1): torch's clamp passes the gradient at its bounds.
    Requires N <= BLOCK_N."""
    view = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    rows = tl.arange(0, BLOCK_N)
    valid = (cols[:, None] < K) & (rows[None, :] < N)
    tile = view * N * K + rows[None, :].to(tl.int64) * K + cols[:, None]  # (BLOCK_S, BLOCK_N) offsets
    x, order = _sorted_columns(tl.load(proj_ptr + tile, mask=valid, other=0.0), valid, rows[None, :])
    # rank j's loss and slope at tile position j
    # Phi(x), Phi(-x) and their logs in float64: in float32, 1 + erf cancels in the lower tail (a relative
    # error ~1e-6 at x = -2) and log Phi rounds to ~1e-7, both of which the rank weights (up to n) multiply.
    # Each side folded into the sums as soon as it is formed: fewer live registers.
    e = tl.erf(x.to(tl.float64) * _INV_SQRT2)
    pdf = _INV_SQRT2PI * tl.exp(-0.5 * x * x)
    below = rows[None, :].to(tl.float32)
    above = (N - 1 - rows[None, :]).to(tl.float32)
    c = tl.load(constant_ptr + rows, mask=rows < N, other=0.0)[None, :]
    a, a_slope = _log_norm_cdf(x, 0.5 * (1.0 + e), pdf, closed)
    terms = c.to(tl.float64) + a * below
    slope = x - a_slope * below
    b, b_slope = _log_norm_cdf(-x, 0.5 * (1.0 - e), pdf, closed)
    terms += b * above
    slope += b_slope * above
    loss = -(terms - (0.5 * x * x + _HALF_LOG_2PI).to(tl.float64)).to(tl.float32)
    if MASKED:
        low = tl.load(cutoffs_ptr + rows, mask=rows < N, other=0.0)[None, :]
        high = tl.load(cutoffs_ptr + N + rows, mask=rows < N, other=0.0)[None, :]
        central = (x > low) & (x < high)
        loss = tl.where(central, float("nan"), loss)
        slope = tl.where(central, 0.0, slope)
    # rank order into the program's own blocks, then lejepa's order: output i reads rank o[i]
    tl.store(loss_ptr + tile, loss, mask=valid)
    tl.store(slope_ptr + tile, slope, mask=valid)
    tl.store(source_ptr + tile, order.to(tl.int64), mask=valid)
    tl.debug_barrier()
    at_order = view * N * K + order.to(tl.int64) * K + cols[:, None]
    loss = tl.load(loss_ptr + at_order, mask=valid, other=0.0)
    slope = tl.load(slope_ptr + at_order, mask=valid, other=0.0)
    feeds = tl.load(source_ptr + at_order, mask=valid, other=0)  # o[o[i]]: the input row output i reads
    tl.debug_barrier()  # every rank-order value is read before the outputs overwrite them
    tl.store(loss_ptr + tile, loss, mask=valid)
    tl.store(slope_ptr + tile, slope, mask=valid)
    tl.store(source_ptr + view * N * K + feeds * K + cols[:, None], rows[None, :].to(tl.int64), mask=valid)
