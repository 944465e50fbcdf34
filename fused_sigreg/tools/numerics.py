"""Error budgets of what the GPU kernels do differently from the eager reference (docs/design.md §7.3):
the angle-addition recurrence over the knots, and tf32 rounding of the projection's operands.
Both are emulated here with ordinary fp32/fp64 torch arithmetic, so they run anywhere."""

from __future__ import annotations

from typing import Dict, List

import torch

from ..backends.triton.configs import RESEED  # the kernels' recurrence restart interval
from ..ops.sigreg import sigreg


def recurrence_error(
    p_max: float = 50.0,
    t_max: float = 3.0,
    n_points: int = 17,
    samples: int = 200_001,
    buckets=(1.0, 3.0, 10.0, 30.0, 50.0),
) -> List[Dict]:
    """Max |error| of cos/sin(t_j p) from the fp32 recurrence (as the kernels run it, restarted every
    RESEED knots except at the last knot) against fp64
    cos/sin, over p in [-p_max, p_max], per |p| bucket and over all knots; beside it the error of
    the reference's own fp32 cos/sin(t_j p), whose rounded argument t_j p dominates at large |p|."""
    p = torch.linspace(-p_max, p_max, samples, dtype=torch.float64)
    delta = t_max / (n_points - 1)
    theta = p.float() * torch.tensor(delta, dtype=torch.float32)
    c1, s1 = torch.cos(theta), torch.sin(theta)
    c, s = torch.ones_like(c1), torch.zeros_like(s1)
    knots = torch.linspace(0.0, t_max, n_points, dtype=torch.float32)  # the reference's knots
    err = torch.zeros_like(p)
    direct = torch.zeros_like(p)
    delta32 = torch.tensor(delta, dtype=torch.float32)
    for j in range(n_points):
        if j > 0 and j % RESEED == 0 and j + 1 < n_points:
            restart = (torch.tensor(float(j), dtype=torch.float32) * delta32) * p.float()
            c, s = torch.cos(restart), torch.sin(restart)
        arg32 = knots[j] * p.float()
        exact = knots[j].double() * p.float().double()
        exact_c, exact_s = torch.cos(exact), torch.sin(exact)
        err = torch.maximum(err, torch.maximum((c.double() - exact_c).abs(), (s.double() - exact_s).abs()))
        direct = torch.maximum(
            direct,
            torch.maximum((torch.cos(arg32).double() - exact_c).abs(), (torch.sin(arg32).double() - exact_s).abs()),
        )
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
