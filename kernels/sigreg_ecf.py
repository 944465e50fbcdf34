"""Triton kernels of SIGReg's fused stage: projection + empirical characteristic function.

For x (V, N, D) and unit directions A (D, K), with knots t_j = j * delta, j < T:
  forward:  partial sums over a tile of rows of cos(t_j p) and sin(t_j p), p = x A,
  backward: dX = dP A^T with dP_nk = sum_j coef_cos[k, j] cos(t_j p_nk) + coef_sin[k, j] sin(t_j p_nk).
Neither an (N, K, T) nor an (N, K) tensor is written: p lives in registers, and the knots
are walked with the angle-addition recurrence (one sin/cos pair per element instead of T):
  c_{j+1} = c_j c_1 - s_j s_1,  s_{j+1} = s_j c_1 + c_j s_1,  (c_1, s_1) = (cos, sin)(delta p).

All tensors are contiguous; integer sizes are not value-specialised so that one compiled
binary per (config, dtype) serves every shape (see ``fused_sigreg.tools.compile_check``).
"""

import triton
import triton.language as tl

_SIZES = ["N", "D", "K", "T", "n_row_tiles"]


@triton.jit
def _round_to_tf32(v):
    """fp32 -> nearest tf32 (ties away from zero), still stored as fp32.

    tensor cores read only the top 10 mantissa bits of a tf32 operand, i.e. they truncate; rounding
    first halves the error and removes truncation's bias toward zero, which the ECF gradient feels
    (see ``fused_sigreg.tools.numerics.tf32_budget``)."""
    bits = v.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x1000) & 0xFFFFE000
    # inf and NaN pass unchanged: adding the rounding bit to a NaN payload such as the GPU's
    # 0x7FFFFFFF would carry into the sign and turn it into -0.0
    special = (bits & 0x7F800000) == 0x7F800000
    return tl.where(special, bits, rounded).to(tl.float32, bitcast=True)


@triton.jit
def _tc_dot(a, b, acc, PRECISION: tl.constexpr):
    """tl.dot with fp32 operands rounded (not truncated) to tf32 when PRECISION is "tf32"."""
    if PRECISION == "tf32":
        return tl.dot(_round_to_tf32(a), _round_to_tf32(b), acc, input_precision="tf32")
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _projection_tile(
    x_row_ptr,
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
    """(BLOCK_N, BLOCK_K) fp32 tile of x[rows] @ A[:, cols]; out-of-range rows/cols are 0.

    x and A share a dtype: fp32 (dot precision per DOT_PRECISION) or 16-bit (tensor cores, fp32
    accumulation). Triton's interpreter mishandles 16-bit dots, so there (EMULATE_16BIT_DOT) the
    operands are widened first: 16-bit products are exact in fp32, so the result is the same."""
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        x_tile = tl.load(
            x_row_ptr + rows[:, None] * D + ds[None, :], mask=(rows[:, None] < N) & (ds[None, :] < D), other=0.0
        )
        a_tile = tl.load(
            a_ptr + ds[:, None] * K + cols[None, :], mask=(ds[:, None] < D) & (cols[None, :] < K), other=0.0
        )
        if EMULATE_16BIT_DOT:
            acc = tl.dot(x_tile.to(tl.float32), a_tile.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = _tc_dot(x_tile, a_tile, acc, DOT_PRECISION)
    return acc


@triton.jit(do_not_specialize=_SIZES)
def ecf_partial_sums_kernel(
    x_ptr,
    a_ptr,
    out_ptr,
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
):
    """Grid (row tiles, column tiles, views). x (V, N, D), A (D, K) in x's dtype, out (V, n_row_tiles, 2, T, K)
    fp32: out[v, i, 0, j, k] = sum over the tile's rows n of cos(t_j p_nk), out[v, i, 1, j, k] the same with sin."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    view = tl.program_id(2).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    p = _projection_tile(
        x_ptr + view * N * D, a_ptr, rows, cols, N, D, K, BLOCK_N, BLOCK_K, BLOCK_D, DOT_PRECISION, EMULATE_16BIT_DOT
    )
    theta = p * delta
    c1 = tl.cos(theta)
    s1 = tl.sin(theta)
    # Rows past N start at (0, 0) and stay there under the recurrence: they add nothing.
    c = tl.where(rows[:, None] < N, 1.0, 0.0) + tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    s = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    out = out_ptr + ((view * n_row_tiles + pid_n) * 2 * T) * K + cols
    col_ok = cols < K
    for j in range(T):
        tl.store(out + j * K, tl.sum(c, axis=0), mask=col_ok)
        tl.store(out + (T + j) * K, tl.sum(s, axis=0), mask=col_ok)
        c, s = c * c1 - s * s1, s * c1 + c * s1


@triton.jit(do_not_specialize=_SIZES)
def ecf_backward_kernel(
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
):
    """Grid (row tiles, views). coef (V, 2, T, K) fp32 holds the per-slice, per-knot coefficients of
    cos and sin; A (D, K) is in x's dtype; dx (V, N, D) fp32 is zero on entry and receives dP A^T
    for the tile's rows."""
    pid_n = tl.program_id(0)
    view = tl.program_id(1).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row_ptr = x_ptr + view * N * D
    dx_row_ptr = dx_ptr + view * N * D
    coef = coef_ptr + view * 2 * T * K
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        p = _projection_tile(
            x_row_ptr, a_ptr, rows, cols, N, D, K, BLOCK_N, BLOCK_K, BLOCK_D, DOT_PRECISION, EMULATE_16BIT_DOT
        )
        theta = p * delta
        c1 = tl.cos(theta)
        s1 = tl.sin(theta)
        c = tl.full((BLOCK_N, BLOCK_K), 1.0, dtype=tl.float32)
        s = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        dp = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for j in range(T):
            w_cos = tl.load(coef + j * K + cols, mask=col_ok, other=0.0)
            w_sin = tl.load(coef + (T + j) * K + cols, mask=col_ok, other=0.0)
            dp += w_cos[None, :] * c + w_sin[None, :] * s
            c, s = c * c1 - s * s1, s * c1 + c * s1
        # Columns past K have zero coefficients, hence dp = 0 there; rows past N are masked on store.
        # dp stays fp32 (never rounded to a 16-bit dtype); DX_PRECISION is tf32 for 16-bit inputs.
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            a_tile = tl.load(
                a_ptr + ds[:, None] * K + cols[None, :], mask=(ds[:, None] < D) & col_ok[None, :], other=0.0
            )
            dx_tile = dx_row_ptr + rows[:, None] * D + ds[None, :]
            dx_mask = (rows[:, None] < N) & (ds[None, :] < D)
            acc = tl.load(dx_tile, mask=dx_mask, other=0.0)
            tl.store(dx_tile, _tc_dot(dp, tl.trans(a_tile.to(tl.float32)), acc, DX_PRECISION), mask=dx_mask)
