"""Slicing directions, Epps–Pulley quadrature and 1-D Gaussian quantile targets.

Everything here is deterministic given its arguments so that every backend sees the
same directions, knots and targets as the eager reference (docs/design.md §3).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

# (t_max, n_points) presets of the Epps–Pulley quadrature.
#   "lejepa": the lejepa repository default.
#   "paper":  LeJEPA paper Algorithm 1 (linspace(-5, 5, 17), trapz, complex ECF), which equals
#             the folded half-line rule on [0, 5] with 9 knots exactly.
QUADRATURE_PRESETS = {"lejepa": (3.0, 17), "paper": (5.0, 9)}


class Quadrature(NamedTuple):
    """Knots and weights of the folded trapezoid rule on [0, t_max], each (T,)."""

    t: torch.Tensor  # knots t_j = linspace(0, t_max, T)
    phi: torch.Tensor  # exp(-t_j^2 / 2), the N(0,1) characteristic function at t_j
    weights: torch.Tensor  # dt * [1, 2, ..., 2, 1] * phi_j


def epps_pulley_quadrature(t_max: float, n_points: int, device=None) -> Quadrature:
    """Float32 knots, target CF and weights exactly as lejepa's ``EppsPulley`` builds them."""
    t = torch.linspace(0.0, t_max, n_points, dtype=torch.float32, device=device)
    dt = t_max / (n_points - 1)
    # [dt, 2 dt, ..., 2 dt, dt] by device ops alone: writing a Python scalar into a CUDA tensor by index
    # (weights[0] = dt) copies it from the host and synchronises the stream on every call
    j = torch.arange(n_points, device=device)
    weights = torch.where((j == 0) | (j == n_points - 1), dt, 2.0 * dt).to(torch.float32)
    phi = torch.exp(-0.5 * t.square())
    return Quadrature(t, phi, weights * phi)


def lejepa_directions(dim: int, num_slices: int, step: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Directions lejepa's ``SlicingUnivariateTest`` draws at ``step``: (dim, num_slices) in ``dtype``.

    ``randn`` from a fresh generator on ``device`` seeded with ``step``, columns divided by their
    L2 norm (no epsilon). CPU and CUDA generators give different numbers, as in lejepa. lejepa draws
    in torch's default dtype: ``dtype`` reproduces that where the default is not float32.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(step))
    a = torch.randn((dim, num_slices), generator=gen, dtype=dtype, device=device)
    return a / a.norm(p=2, dim=0)


def random_directions(
    dim: int, num_slices: int, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """Unit-norm columns (dim, num_slices) float32 from ``generator`` (or torch's default RNG)."""
    if generator is not None:
        device = generator.device
    a = torch.randn((dim, num_slices), generator=generator, dtype=torch.float32, device=device)
    return a / a.norm(p=2, dim=0)


def normal_quantiles(n: int, clamp: Optional[float] = None, device=None) -> torch.Tensor:
    """N(0,1) quantiles at i/(n+1), i = 1..n, as (n,) float32.

    ``clamp=None`` is VISReg's target ``sqrt(2) * erfinv(2 i/(n+1) - 1)``; ``clamp=c`` first clips
    the levels to [c, 1 - c] (VISReg's SWD baseline uses ``c = 1e-4`` with ``Normal.icdf``).
    Computed in float64 and rounded once.
    """
    levels = torch.arange(1, n + 1, dtype=torch.float64, device=device) / (n + 1)
    if clamp is not None:
        levels = levels.clamp(clamp, 1.0 - clamp)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * levels - 1.0)).to(torch.float32)
