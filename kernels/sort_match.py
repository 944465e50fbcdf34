"""Triton kernel of sort-and-match: SWD, VISReg's shape term and RDMReg, BLOCK_S adjacent slices per program.

Projections are (V, N, K) float32, contiguous, as ``x @ W`` writes them; slice s = v * K + k is the
column p[v, :, k]. Each program loads BLOCK_S adjacent columns as one (BLOCK_S, BLOCK_N) tile (a row's
BLOCK_S values are adjacent in memory, so the loads are coalesced: 32 bytes per row at BLOCK_S = 8),
sorts every column in registers and, against a target of sorted values t_0 <= ... <= t_{N-1} (shared
quantiles (N,), or the slice's own target samples, sorted here too),
  sum_sq[s]         = sum_i (p_(i) - t_i)^2,
  grad[v, row_i, k] = 2 (p_(i) - t_i),   row_i the original row of the i-th smallest value,
so the gradient exists when forward ends and backward is one multiply. The gradient store scatters by
row (each rank's BLOCK_S columns come from different rows), within the program's own 32-byte sectors.

Sort keys pack an order-preserving uint32 image of the value above the row index into 64 bits:
the keys are unique, so the order is that of a stable sort (equal values keep row order), and
unpacking gives back the canonical value (-0 as +0, every NaN as +NaN, last, as torch.sort puts it)
and its row. The same key image is ``csrc/sort_match.h``'s ``ordered_bits``.
"""

import triton
import triton.language as tl

# Padding lanes get the largest key, which sorts after every real value (NaN's image is 0xFFC00000).
_PAD_KEY = tl.constexpr(0xFFFFFFFF)


@triton.jit
def _ordered_bits(v):
    """float32 -> uint32 with a < b iff image(a) < image(b), after -0 -> +0 and NaN -> +NaN.

    XOR with all ones instead of ~: Triton's interpreter cannot invert unsigned integers."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = tl.where(bits == 0x80000000, 0, bits)
    bits = tl.where(v != v, 0x7FC00000, bits)
    return tl.where((bits & 0x80000000) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)


@triton.jit
def _from_ordered_bits(image):
    """Inverse of ``_ordered_bits`` (on canonical values)."""
    bits = tl.where((image & 0x80000000) != 0, image & 0x7FFFFFFF, image ^ 0xFFFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _sorted_columns(values, valid, rows):
    """(sorted canonical values, their original rows) of every column of a (BLOCK_S, BLOCK_N) tile, sorted
    along the last dimension; invalid entries sort last."""
    keys = tl.where(valid, _ordered_bits(values), _PAD_KEY)
    packed = tl.sort((keys.to(tl.uint64) << 32) | rows.to(tl.uint64))
    return _from_ordered_bits((packed >> 32).to(tl.uint32)), (packed & 0xFFFFFFFF).to(tl.int32)


@triton.jit(do_not_specialize=["N", "K"])
def sort_match_kernel(
    proj_ptr,
    target_ptr,
    sum_sq_ptr,
    grad_ptr,
    N,
    K,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    TWO_SAMPLE: tl.constexpr,
):
    """Grid (ceil(K / BLOCK_S), V). proj and grad (V, N, K) fp32; target (N,) sorted fp32, or (V, N, K) fp32
    samples when TWO_SAMPLE; sum_sq (V, K) fp32. Requires N <= BLOCK_N."""
    view = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    rows = tl.arange(0, BLOCK_N)
    # padding rows sort last, so ranks < N hold exactly the real rows; padding columns store nothing
    valid = (cols[:, None] < K) & (rows[None, :] < N)
    tile = view * N * K + rows[None, :].to(tl.int64) * K + cols[:, None]  # (BLOCK_S, BLOCK_N) offsets
    values, source_rows = _sorted_columns(tl.load(proj_ptr + tile, mask=valid, other=0.0), valid, rows[None, :])
    if TWO_SAMPLE:
        samples = tl.load(target_ptr + tile, mask=valid, other=0.0)
        target = _from_ordered_bits(tl.sort(tl.where(valid, _ordered_bits(samples), _PAD_KEY)))
    else:
        target = tl.load(target_ptr + rows, mask=rows < N, other=0.0)[None, :]
    residual = tl.where(valid, values - target, 0.0)
    tl.store(sum_sq_ptr + view * K + cols, tl.sum(residual * residual, axis=1), mask=cols < K)
    out = view * N * K + source_rows.to(tl.int64) * K + cols[:, None]
    tl.store(grad_ptr + out, 2.0 * residual, mask=valid)
