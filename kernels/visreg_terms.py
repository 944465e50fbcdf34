"""Triton kernels of VISReg's centre and scale terms: the Triton twin of ``csrc/visreg_terms_cpu.cpp``
(definitions in ``fused_sigreg/reference.py``, ``visreg_terms``).

centered = z - mu (V, N, D) float32, any N; grid (ceil(D / BLOCK_D), V), each program BLOCK_D adjacent
columns of one view, walked in BLOCK_N-row chunks. The mean and the norm come from torch (the
reference's reductions); the kernels do the rest with the reference's float32 roundings, so that the
normalised values are the reference's bit for bit. Forward (``visreg_terms_kernel``): sigma = norm /
sqrt(N) + eps as torch computes it on the device (a true division on CPU, a multiply by the float32
reciprocal on CUDA: RECIPROCAL), normalised = centered / sigma (IEEE division), and each column's share of
the centre and scale terms. Backward (``visreg_terms_backward_kernel``): H = G / sigma + k centered summed
over the rows, then written less its mean plus the centre term's gradient.
"""

import triton
import triton.language as tl


@triton.jit
def _chunk(base, start, cols, col_ok, N, D, BLOCK_N: tl.constexpr):
    """Offsets and mask of rows start .. start + BLOCK_N of the program's columns."""
    rows = start + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < N) & col_ok[None, :]
    return base + rows[:, None].to(tl.int64) * D + cols[None, :], mask


@triton.jit(do_not_specialize=["N", "D"])
def visreg_terms_kernel(
    c_ptr,
    mu_ptr,
    norm_ptr,
    out_ptr,
    sigma_ptr,
    share_ptr,
    N,
    D,
    root_n,
    eps,
    scale_weight,
    center_weight,
    inv_m,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    RECIPROCAL: tl.constexpr,
):
    """centered (V, N, D), mu and norm (V, D) -> out (V, N, D) = centered / sigma, sigma (V, D), share
    (V, D) = (scale_weight (sigma - 1)^2 + center_weight mu^2) * inv_m (inv_m = 1 / (V D): summed, the
    terms). root_n: sqrt(N) in float32, or its float32 reciprocal where RECIPROCAL."""
    v = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    col = v.to(tl.int64) * D + cols
    mu = tl.load(mu_ptr + col, mask=col_ok, other=0.0)
    norm = tl.load(norm_ptr + col, mask=col_ok, other=0.0)
    if RECIPROCAL:
        sigma = norm * root_n + eps
    else:
        sigma = tl.math.div_rn(norm, root_n) + eps
    tl.store(sigma_ptr + col, sigma, mask=col_ok)
    share = (scale_weight * (sigma - 1.0) * (sigma - 1.0) + center_weight * mu * mu) * inv_m
    tl.store(share_ptr + col, share, mask=col_ok)
    base = v.to(tl.int64) * N * D
    for start in range(0, N, BLOCK_N):
        offs, mask = _chunk(base, start, cols, col_ok, N, D, BLOCK_N)
        x = tl.load(c_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, tl.math.div_rn(x, sigma[None, :]), mask=mask)


@triton.jit(do_not_specialize=["N", "D"])
def visreg_terms_backward_kernel(
    g_ptr,
    c_ptr,
    mu_ptr,
    sigma_ptr,
    norm_ptr,
    go_ptr,
    out_ptr,
    N,
    D,
    shape_factor,
    k_scale,
    c_scale,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """grad_z (V, N, D) from G = shape_factor * g (d loss / d normalised), the forward's centered, mu,
    sigma and norm, and grad_out (one float32): H = G / sigma + k centered, k = grad_out k_scale (sigma -
    1) / norm (0 where the norm is 0; k_scale = 2 scale_weight / (V D sqrt(N))), out = H - mean_N H +
    grad_out c_scale mu (c_scale = 2 center_weight / (V D N))."""
    v = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    col = v.to(tl.int64) * D + cols
    mu = tl.load(mu_ptr + col, mask=col_ok, other=0.0)
    sigma = tl.load(sigma_ptr + col, mask=col_ok, other=1.0)
    norm = tl.load(norm_ptr + col, mask=col_ok, other=1.0)
    go = tl.load(go_ptr)
    inv = 1.0 / sigma
    k = tl.where(norm == 0.0, 0.0, go * k_scale * (sigma - 1.0) / tl.where(norm == 0.0, 1.0, norm))
    base = v.to(tl.int64) * N * D
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs, mask = _chunk(base, start, cols, col_ok, N, D, BLOCK_N)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        x = tl.load(c_ptr + offs, mask=mask, other=0.0)
        acc += shape_factor * g * inv[None, :] + k[None, :] * x
    shift = go * c_scale * mu - tl.sum(acc, axis=0) / N
    for start in range(0, N, BLOCK_N):
        offs, mask = _chunk(base, start, cols, col_ok, N, D, BLOCK_N)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        x = tl.load(c_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, shape_factor * g * inv[None, :] + k[None, :] * x + shift[None, :], mask=mask)
