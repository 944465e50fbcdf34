"""Error budgets of what the GPU kernels do differently from the eager reference (docs/design.md §7.3):
the angle-addition recurrence over the knots, and tf32 rounding of the projection's operands.
Both are emulated here with ordinary fp32/fp64 torch arithmetic, so they run anywhere."""

from __future__ import annotations

import math
from typing import Dict, List

import torch

from ..backends.triton.configs import RESEED  # the kernels' recurrence restart interval
from ..ops.sigreg import sigreg

# Ways to walk cos/sin(t_j p) over the knots, with their fp32 instruction cost per element and knot
# (cos and sin together; an FMA counts one). "angle_addition" is what the kernels do:
#   c' = c c1 - s s1, s' = s c1 + c s1                         (2 mul + 2 FMA)
# "chebyshev" is the three-term recurrence, half the work:
#   c' = 2 c1 c - c_prev, s' = 2 c1 s - s_prev                   (2 FMA)
SCHEMES = {"angle_addition": 4, "chebyshev": 2}
# Hardware sin/cos (MUFU, CUDA's __sinf/__cosf): the CUDA programming guide documents a max absolute error
# of 2^-21.41 for arguments in [-pi, pi] and only "larger otherwise" (not emulated here). Cost on sm_90: one
# fp32 multiply for t_j p and two MUFU ops at 16 per clock per SM against 128 FMAs: 1 + 2 x 8 = 17 slots.
HW_SINCOS_ABS_ERROR = 2.0**-21.41
HW_SINCOS_FMA_SLOTS = 17


def recurrence_error(
    p_max: float = 50.0,
    t_max: float = 3.0,
    n_points: int = 17,
    samples: int = 200_001,
    buckets=(1.0, 3.0, 10.0, 30.0, 50.0),
    scheme: str = "angle_addition",
) -> List[Dict]:
    """Max |error| of cos/sin(t_j p) from an fp32 recurrence (``scheme`` of ``SCHEMES``; restarted every
    RESEED knots except at the last knot, as the kernels do) against fp64
    cos/sin, over p in [-p_max, p_max], per |p| bucket and over all knots; beside it the error of
    the reference's own fp32 cos/sin(t_j p), whose rounded argument t_j p dominates at large |p|."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    p = torch.linspace(-p_max, p_max, samples, dtype=torch.float64)
    delta = t_max / (n_points - 1)
    delta32 = torch.tensor(delta, dtype=torch.float32)
    theta = p.float() * delta32
    c1, s1 = torch.cos(theta), torch.sin(theta)
    c, s = torch.ones_like(c1), torch.zeros_like(s1)
    c_prev, s_prev = c1, -s1  # the knot before 0, for the three-term recurrence
    knots = torch.linspace(0.0, t_max, n_points, dtype=torch.float32)  # the reference's knots
    err = torch.zeros_like(p)
    direct = torch.zeros_like(p)
    for j in range(n_points):
        if j > 0 and j % RESEED == 0 and j + 1 < n_points:
            restart = (torch.tensor(float(j), dtype=torch.float32) * delta32) * p.float()
            c, s = torch.cos(restart), torch.sin(restart)
            before = (torch.tensor(float(j - 1), dtype=torch.float32) * delta32) * p.float()
            c_prev, s_prev = torch.cos(before), torch.sin(before)
        arg32 = knots[j] * p.float()
        exact = knots[j].double() * p.float().double()
        exact_c, exact_s = torch.cos(exact), torch.sin(exact)
        err = torch.maximum(err, torch.maximum((c.double() - exact_c).abs(), (s.double() - exact_s).abs()))
        direct = torch.maximum(
            direct,
            torch.maximum((torch.cos(arg32).double() - exact_c).abs(), (torch.sin(arg32).double() - exact_s).abs()),
        )
        if scheme == "chebyshev":
            # rounded twice (2 c1 c, then the difference) where a GPU fuses them in one FMA; the error that
            # rules the scheme out is the recurrence's growth at small angles, not this last rounding
            c, s, c_prev, s_prev = 2 * c1 * c - c_prev, 2 * c1 * s - s_prev, c, s
        else:
            c, s = c * c1 - s * s1, s * c1 + c * s1
    rows, lo = [], 0.0
    for hi in buckets:
        mask = (p.abs() >= lo) & (p.abs() <= hi)
        rows.append(
            dict(
                p_range=f"{lo:g} <= |p| <= {hi:g}",
                recurrence_max_abs_error=err[mask].max().item(),
                direct_fp32_max_abs_error=direct[mask].max().item(),
            )
        )
        lo = hi
    return rows


def round_to_tf32(t: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """fp32 values rounded to tf32's 10 mantissa bits: "nearest" (ties away from zero, what the
    kernels do before a tf32 dot) or "truncate" (what tensor cores do to unrounded fp32 operands)."""
    if mode not in ("nearest", "truncate"):
        raise ValueError(f"mode must be 'nearest' or 'truncate', got {mode!r}")
    bits = t.float().contiguous().view(torch.int32)
    rounded = (bits + 0x1000 if mode == "nearest" else bits) & ~0x1FFF
    # inf and NaN keep their bits (a NaN payload plus the rounding bit could carry into the sign)
    special = (bits & 0x7F800000) == 0x7F800000
    return torch.where(special, bits, rounded).view(torch.float32)


def tf32_budget(N: int = 4096, D: int = 512, K: int = 512, mode: str = "nearest", seed: int = 0) -> Dict[str, float]:
    """Relative change of SIGReg's value and input gradient (max-norm) when x and A are rounded to tf32."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=gen)
    a = torch.nn.functional.normalize(torch.randn(D, K, generator=gen), dim=0)
    out = {}
    for name, (xi, ai) in {"fp32": (x, a), "tf32": (round_to_tf32(x, mode), round_to_tf32(a, mode))}.items():
        xi = xi.clone().requires_grad_()
        value = sigreg(xi, directions=ai, backend="eager")
        (grad,) = torch.autograd.grad(value, xi)
        out[name] = (value.detach().double(), grad.double())
    (v32, g32), (vtf, gtf) = out["fp32"], out["tf32"]
    return dict(
        mode=mode,
        value_rel_err=((vtf - v32).abs() / v32.abs()).item(),
        grad_rel_err=((gtf - g32).abs().max() / g32.abs().max()).item(),
    )


def knot_walk_comparison(p_max: float = 50.0, t_max: float = 3.0, n_points: int = 17, samples: int = 200_001):
    """Per way of evaluating cos/sin(t_j p): FMA slots per element and knot and max |error| against fp64 per
    |p| bucket. The recurrences are emulated in fp32; hardware sin/cos is the direct fp32 error plus the
    documented bound, only where t_max |p| <= pi ("-" beyond: no bound is documented); direct fp32 is libm,
    what the eager reference computes."""

    def row(scheme, cost, table, key, extra=0.0):
        return dict(scheme=scheme, fma_slots_per_knot=cost, **{r["p_range"]: r[key] + extra for r in table})

    rows = []
    for scheme, cost in SCHEMES.items():
        table = recurrence_error(p_max, t_max, n_points, samples, scheme=scheme)
        rows.append(row(scheme, cost, table, "recurrence_max_abs_error"))
    hw = row("hw sin/cos (bound)", HW_SINCOS_FMA_SLOTS, table, "direct_fp32_max_abs_error", HW_SINCOS_ABS_ERROR)
    for r in table:
        if t_max * float(r["p_range"].split("<=")[-1]) > math.pi:
            hw[r["p_range"]] = "-"
    rows.append(hw)
    rows.append(row("direct fp32 (libm)", "-", table, "direct_fp32_max_abs_error"))
    return rows
