"""Triton helpers shared by the SIGReg kernels (``sigreg_fused.py``, ``ecf_passes.py``): tf32 rounding and
the knot walk (angle-addition recurrence restarted every RESEED knots but the last, see ``sigreg_fused.py``)."""

import triton
import triton.language as tl

# knots per iteration of the ECF passes' knot loops: unrolled by two, the recurrence's loop-carried (cos, sin)
# need no register moves (compile-check's sass_per_knot, dP pass: 8.9 -> 7.5 on sm_90; four gave 7.4). The
# fully fused backward keeps 1 and the product-sum form: unrolled, three of its configurations spill on
# triton 3.8; in FMA form, three on 3.6.
KNOT_UNROLL = tl.constexpr(2)


@triton.jit
def round_to_tf32(v):
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
def block_end(j0, T, RESEED: tl.constexpr):
    """End of the run of knots walked from a (re)start at j0: RESEED knots, and the last knot too
    when it alone would be left for the next block."""
    end = tl.minimum(j0 + RESEED, T)
    if end == T - 1:
        end = T
    return end


@triton.jit
def restart(arg, c, s):
    """(cos, sin)(arg) where |arg| <= 2^13, else (c, s) unchanged (NaN/inf stay what they are).

    Cody-Waite reduction by pi/2 in three parts and the single-precision minimax polynomials of
    Cephes' sinf/cosf (a few ulp), the CPU kernel's sincos_block: plain arithmetic, no libdevice
    call, so restarting inside the knot loop adds no register spills."""
    y = arg * 0.63661977236758134  # 2 / pi
    n = tl.floor(y + 0.5)
    r = ((arg - n * 1.5703125) - n * 4.837512969970703125e-4) - n * 7.549789948768648e-8
    z = r * r
    sp = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4))
    cp = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5))
    q = n.to(tl.int32) & 3
    sv = tl.where((q & 1) != 0, cp, sp)
    cv = tl.where((q & 1) != 0, sp, cp)
    ok = tl.abs(arg) <= 8192.0
    c = tl.where(ok, tl.where(((q + 1) & 2) != 0, -cv, cv), c)
    s = tl.where(ok, tl.where((q & 2) != 0, -sv, sv), s)
    return c, s


@triton.jit
def dp_from_knots(p, coef, col_ok, K, T, delta, RESEED: tl.constexpr, UNROLL: tl.constexpr):
    """dL/dp of a (rows, columns) fp32 tile: sum_j coef[j K] cos(j delta p) + coef[(T + j) K] sin(j delta p),
    coef pointing at the tile's columns of one view's (2, T, K) coefficients (columns past K masked to 0),
    the knots walked with the recurrence restarted every RESEED knots but the last, UNROLL knots an iteration."""
    theta = p * delta
    c1 = tl.cos(theta)
    s1 = tl.sin(theta)
    c = tl.zeros_like(p) + 1.0
    s = tl.zeros_like(p)
    dp = tl.zeros_like(p)
    for j0 in range(0, T - 1, RESEED):
        if j0 > 0:
            c, s = restart(p * (j0 * delta), c, s)
        for j in tl.range(j0, block_end(j0, T, RESEED), loop_unroll_factor=UNROLL):
            w_cos = tl.load(coef + j * K, mask=col_ok, other=0.0)
            w_sin = tl.load(coef + (T + j) * K, mask=col_ok, other=0.0)
            if UNROLL > 1:  # two FMAs (a product-sum then an add is three instructions per element and knot)
                dp = tl.fma(w_cos[None, :], c, dp)
                dp = tl.fma(w_sin[None, :], s, dp)
            else:  # the fully fused backward (registers tight: see KNOT_UNROLL)
                dp += w_cos[None, :] * c + w_sin[None, :] * s
            c, s = c * c1 - s * s1, s * c1 + c * s1
    return dp
