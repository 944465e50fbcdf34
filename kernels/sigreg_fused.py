"""Triton kernels of SIGReg's fused stage: projection + empirical characteristic function.

For x (V, N, D) and unit directions A (D, K), with knots t_j = j * delta, j < T:
  forward:  sums over rows of cos(t_j p) and sin(t_j p), p = x A, accumulated in fixed point,
  backward: dX = dP A^T with dP_nk = sum_j coef_cos[k, j] cos(t_j p_nk) + coef_sin[k, j] sin(t_j p_nk).
Neither an (N, K, T) nor an (N, K) tensor is written: p lives in registers, and the knots
are walked with the angle-addition recurrence (one sin/cos pair per element per RESEED knots
instead of one per knot):
  c_{j+1} = c_j c_1 - s_j s_1,  s_{j+1} = s_j c_1 + c_j s_1,  (c_1, s_1) = (cos, sin)(delta p),
restarted at every RESEED-th knot but the last from (cos, sin)(j delta p): the recurrence's rounding
error grows about linearly with the number of steps since the last restart, and the restarts bound it
(at most RESEED steps) for any number of knots; a restart at the last knot would cost one more sin/cos
per element for one knot (at the default 17 knots, twice the sin/cos of the whole walk).

All tensors are contiguous; integer sizes are not value-specialised so that one compiled
binary per (config, dtype) serves every shape (see ``fused_sigreg.tools.compile_check``).
"""

import triton
import triton.language as tl

from .common import block_end, dp_from_knots, restart, round_to_tf32

_SIZES = ["N", "D", "K", "T", "n_row_tiles"]


@triton.jit
def _tc_dot(a, b, acc, PRECISION: tl.constexpr):
    """tl.dot with fp32 operands rounded (not truncated) to tf32 when PRECISION is "tf32"; "tf32x2"
    splits a into a tf32 head and the tf32 rounding of its remainder, two tensor-core dots that
    carry a to about 2^-22 (b must be exact in tf32, as 16-bit values are)."""
    if PRECISION == "tf32x2":
        head = round_to_tf32(a)
        out = tl.dot(head, round_to_tf32(b), acc, input_precision="tf32")
        out = tl.dot(round_to_tf32(a - head), round_to_tf32(b), out, input_precision="tf32")
    elif PRECISION == "tf32":
        out = tl.dot(round_to_tf32(a), round_to_tf32(b), acc, input_precision="tf32")
    else:
        out = tl.dot(a, b, acc, input_precision=PRECISION)
    return out


@triton.jit
def _projection_tile(
    x_tile_ptr,
    a_ptr,
    rows,
    cols,
    N,
    D,
    K,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_16BIT_DOT: tl.constexpr,
):
    """(BLOCK_N, BLOCK_K) fp32 tile of x[rows] @ A[:, cols], x_tile_ptr pointing at row rows[0];
    out-of-range rows/cols are 0.

    x and A share a dtype: fp32 (dot precision per DOT_PRECISION) or 16-bit (tensor cores, fp32
    accumulation). Triton's interpreter mishandles 16-bit dots, so there (EMULATE_16BIT_DOT) the
    operands are widened first: 16-bit products are exact in fp32, so the result is the same."""
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        x_tile = tl.load(
            x_tile_ptr + tl.arange(0, BLOCK_N)[:, None] * D + ds[None, :],
            mask=(rows[:, None] < N) & (ds[None, :] < D),
            other=0.0,
        )
        a_tile = tl.load(
            a_ptr + ds[:, None] * K + cols[None, :], mask=(ds[:, None] < D) & (cols[None, :] < K), other=0.0
        )
        if EMULATE_16BIT_DOT:
            acc = tl.dot(x_tile.to(tl.float32), a_tile.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = _tc_dot(x_tile, a_tile, acc, DOT_PRECISION)
    return acc


@triton.jit
def _projection_tile_t(
    x_tile_ptr,
    at_ptr,
    rows,
    cols,
    N,
    D,
    K,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_16BIT_DOT: tl.constexpr,
):
    """(BLOCK_K, BLOCK_N) fp32 tile of (x[rows] @ A[:, cols])^T = A^T[cols] x[rows]^T from A^T (K, D),
    x_tile_ptr pointing at row rows[0]; out-of-range rows/cols are 0.

    Transposed so that the rows of x lie along the MMA's N dimension, where a thread holds many
    columns of the accumulator and the warps do not split: a sum over rows is mostly in-thread. Both
    operands are read along D, the dot's reduction dimension (K-major, what tf32 MMAs on sm_90 need
    from shared memory), in 16-byte pieces where D is a multiple of 16."""
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        x_tile = tl.load(
            x_tile_ptr + tl.arange(0, BLOCK_N)[:, None] * D + ds[None, :],
            mask=(rows[:, None] < N) & (ds[None, :] < D),
            other=0.0,
        )
        at_tile = tl.load(
            at_ptr + cols[:, None] * D + ds[None, :], mask=(cols[:, None] < K) & (ds[None, :] < D), other=0.0
        )
        if EMULATE_16BIT_DOT:
            acc = tl.dot(at_tile.to(tl.float32), tl.trans(x_tile.to(tl.float32)), acc, input_precision="ieee")
        else:
            acc = _tc_dot(at_tile, tl.trans(x_tile), acc, DOT_PRECISION)
    return acc


# Fixed point of the forward's sums: a tile's fp32 sum times 2^32, rounded, is exact for |sum| >= 2^-8 and
# within 2^-33 below; int64 adds are associative, so atomics from every row tile give one result in any
# order (deterministic), and |sum| <= N < 2^31 keeps the total below 2^63.
SUM_SCALE = 2.0**32
_SUM_SCALE = tl.constexpr(SUM_SCALE)


@triton.jit(do_not_specialize=_SIZES)
def sigreg_fused_forward_kernel(
    x_ptr,
    at_ptr,
    out_ptr,
    bad_ptr,
    N,
    D,
    K,
    T,
    n_row_tiles,
    delta,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_16BIT_DOT: tl.constexpr,
    RESEED: tl.constexpr,
    D_ALIGNED: tl.constexpr,
):
    """Grid (row tiles, column tiles, views). x (V, N, D) and A^T (K, D) in x's dtype; out (V, 2, T, K) int64 and
    bad (V, K) int32, zero on entry. Every row tile adds, by atomics, SUM_SCALE x its sum over rows n of
    cos(t_j p_nk) to out[v, 0, j, k] (sin to out[v, 1, j, k]) and sets bad[v, k] to 1 where a p_nk is not
    finite (fixed point cannot hold the NaN that eager gives for every knot there). out is O(V K T),
    whatever N. D_ALIGNED: D is a multiple of 16, which the launcher checks (rows then start 16-byte
    aligned; the sizes are not specialised, so the kernel is told)."""
    if D_ALIGNED:
        D = (D // 16) * 16  # == D; the multiplication shows the compiler its divisibility
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    view = tl.program_id(2).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    # p is (BLOCK_K, BLOCK_N), columns by rows: the sums over rows below reduce along axis 1
    # the tile's first row in int64 (N * D may pass 2^31, the sizes memory="min" is for); offsets within
    # the tile stay int32
    x_tile_ptr = x_ptr + (view * N + pid_n.to(tl.int64) * BLOCK_N) * D
    p = _projection_tile_t(
        x_tile_ptr, at_ptr, rows, cols, N, D, K, BLOCK_N, BLOCK_K, BLOCK_D, DOT_PRECISION, EMULATE_16BIT_DOT
    )
    col_ok = cols < K
    row_ok = rows[None, :] < N
    theta = p * delta
    c1 = tl.cos(theta)
    s1 = tl.sin(theta)
    # Rows past N start at (0, 0) and stay there under the recurrence: they add nothing.
    c = tl.where(row_ok, 1.0, 0.0) + tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    s = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    out = out_ptr + view * 2 * T * K + cols
    for j0 in range(0, T - 1, RESEED):
        if j0 > 0:
            c, s = restart(p * (j0 * delta), c, s)
            c = tl.where(row_ok, c, 0.0)
            s = tl.where(row_ok, s, 0.0)
        for j in range(j0, block_end(j0, T, RESEED)):
            tl.atomic_add(out + j * K, _fixed_point(tl.sum(c, axis=1)), mask=col_ok, sem="relaxed")
            tl.atomic_add(out + (T + j) * K, _fixed_point(tl.sum(s, axis=1)), mask=col_ok, sem="relaxed")
            c, s = c * c1 - s * s1, s * c1 + c * s1
    # p - p is 0 for finite p and NaN for NaN or +-inf. Flagged after the knot walk: before it, the flag's
    # live values cost ptxas spill bytes (24 in fp32 without tf32 for sm_90).
    not_finite = tl.max(tl.where(row_ok & ((p - p) != 0.0), 1, 0), axis=1)
    tl.atomic_max(bad_ptr + view * K + cols, not_finite, mask=col_ok & (not_finite != 0), sem="relaxed")


@triton.jit
def _fixed_point(v):
    """fp32 sums -> int64 in units of 2^-32, rounded to nearest; NaN/inf map to 0 (``bad`` flags them)."""
    v = tl.where((v - v) == 0.0, v, 0.0)
    return tl.floor(v * _SUM_SCALE + 0.5).to(tl.int64)


@triton.jit(do_not_specialize=_SIZES)
def sigreg_fused_backward_kernel(
    x_ptr,
    a_ptr,
    coef_ptr,
    dx_ptr,
    N,
    D,
    K,
    T,
    n_row_tiles,
    delta,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DX_PRECISION: tl.constexpr,
    EMULATE_16BIT_DOT: tl.constexpr,
    RESEED: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Grid (row tiles, views). coef (V, 2, T, K) fp32 holds the per-slice, per-knot coefficients of
    cos and sin; A (D, K) is in x's dtype; dx (V, N, D) fp32 is zero on entry and receives dP A^T
    for the tile's rows. ALIGNED: D and K are multiples of 16, which the launcher checks (16-byte loads of
    the rows of x, A and dX)."""
    if ALIGNED:
        D = (D // 16) * 16  # == D; the multiplications show the compiler the divisibility
        K = (K // 16) * 16
    pid_n = tl.program_id(0)
    view = tl.program_id(1).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # the tile's first row in int64 (N * D may pass 2^31, the sizes memory="min" is for); offsets
    # within the tile stay int32
    tile = (view * N + pid_n.to(tl.int64) * BLOCK_N) * D
    x_tile_ptr = x_ptr + tile
    dx_tile_ptr = dx_ptr + tile
    coef = coef_ptr + view * 2 * T * K
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        p = _projection_tile(
            x_tile_ptr, a_ptr, rows, cols, N, D, K, BLOCK_N, BLOCK_K, BLOCK_D, DOT_PRECISION, EMULATE_16BIT_DOT
        )
        dp = dp_from_knots(p, coef + cols, col_ok, K, T, delta, RESEED, 1)
        # Columns past K have zero coefficients, hence dp = 0 there; rows past N are masked on store.
        # dp stays fp32 (never rounded to a 16-bit dtype); for 16-bit inputs DX_PRECISION is tf32x2,
        # which keeps dp to about fp32 precision on tensor cores.
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            a_tile = tl.load(
                a_ptr + ds[:, None] * K + cols[None, :], mask=(ds[:, None] < D) & col_ok[None, :], other=0.0
            )
            dx_tile = dx_tile_ptr + tl.arange(0, BLOCK_N)[:, None] * D + ds[None, :]
            dx_mask = (rows[:, None] < N) & (ds[None, :] < D)
            acc = tl.load(dx_tile, mask=dx_mask, other=0.0)
            tl.store(dx_tile, _tc_dot(dp, tl.trans(a_tile.to(tl.float32)), acc, DX_PRECISION), mask=dx_mask)
