"""Rectified generalized Gaussian (RGG) target of Rectified LpJEPA's RDMReg.

GN_p(mu, sigma) has density proportional to exp(-|x - mu|^p / (p sigma^p)); a sample is
``mu + sigma * S * (p G)^(1/p)`` with S = +-1 fair and G ~ Gamma(1/p, 1). p = 1 is Laplace(mu, sigma),
p = 2 is N(mu, sigma^2). The RGG is ReLU of it.

Moments of ReLU(X) are closed form with the regularized upper incomplete gamma function Q(a, x):
for Y ~ GN_p(0, 1) and b >= 0, E[Y^i 1{Y > b}] = p^(i/p) Gamma((i+1)/p) / (2 Gamma(1/p)) * Q((i+1)/p, b^p / p).
All of it is evaluated in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch

from .validation import check_lp_parameter, check_number


def gn_unit_variance_sigma(p: float) -> float:
    """sigma_GN: the scale for which GN_p(mu, sigma) has unit variance."""
    check_lp_parameter(p)
    return math.sqrt(math.gamma(1.0 / p) / math.gamma(3.0 / p)) / p ** (1.0 / p)


def _truncated_moment(i: int, p: float, b: float) -> float:
    """E[Y^i 1{Y > b}] for Y ~ GN_p(0, 1) and b >= 0."""
    a = (i + 1) / p
    upper = torch.special.gammaincc(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b**p / p, dtype=torch.float64)
    ).item()
    return 0.5 * p ** (i / p) * math.exp(math.lgamma(a) - math.lgamma(1.0 / p)) * upper


def _upper_moment(i: int, p: float, a: float) -> float:
    """E[Y^i 1{Y > a}] for any real a, using the symmetry of Y."""
    if a >= 0:
        return _truncated_moment(i, p, a)
    full = 2.0 * _truncated_moment(i, p, 0.0) if i % 2 == 0 else 0.0
    return full - (-1) ** i * _truncated_moment(i, p, -a)


class RectifiedMoments(NamedTuple):
    mean: float  # E[ReLU(X)]
    variance: float  # Var[ReLU(X)]
    active_fraction: float  # P(X > 0): the expected l0 fraction of the target


def rgn_moments(p: float, mu: float, sigma: float) -> RectifiedMoments:
    """Mean, variance and P(X > 0) of ReLU(X), X ~ GN_p(mu, sigma)."""
    check_lp_parameter(p)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a = -mu / sigma
    m0, m1, m2 = (_upper_moment(i, p, a) for i in range(3))
    mean = mu * m0 + sigma * m1
    second = mu * mu * m0 + 2.0 * mu * sigma * m1 + sigma * sigma * m2
    return RectifiedMoments(mean, second - mean * mean, m0)


def rgn_unit_variance_sigma(p: float, mu: float = 0.0, target_var: float = 1.0) -> float:
    """sigma_RGN: the scale for which Var(ReLU(X)) = target_var (default 1), X ~ GN_p(mu, sigma)
    (bisection in log sigma, to float64 precision)."""
    check_lp_parameter(p)
    check_number(mu, "mu")
    check_number(target_var, "target_var", 0.0, low_open=True)
    lo, hi = 1e-3, 1.0
    while rgn_moments(p, mu, hi).variance < target_var:
        lo, hi = hi, hi * 2.0
        if hi > 1e8:
            raise ValueError(f"no sigma gives Var(ReLU(X)) = {target_var} for p={p}, mu={mu}")
    while rgn_moments(p, mu, lo).variance > target_var:
        lo *= 0.5
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if rgn_moments(p, mu, mid).variance < target_var:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


def expected_l0_fraction(p: float, mu: float = 0.0, sigma: Optional[float] = None) -> float:
    """Expected fraction of non-zero coordinates of the RGG target, P(X > 0)."""
    sigma = gn_unit_variance_sigma(p) if sigma is None else sigma
    return rgn_moments(p, mu, sigma).active_fraction


def resolve_sigma(p: float, mu: float, sigma) -> float:
    """``sigma`` may be a number, ``"sigma_GN"`` (default of Rectified LpJEPA) or ``"sigma_RGN"``."""
    if sigma is None or sigma == "sigma_GN":
        return gn_unit_variance_sigma(p)
    if sigma == "sigma_RGN":
        return rgn_unit_variance_sigma(p, mu)
    if isinstance(sigma, str):
        raise ValueError(f"sigma must be a positive number, 'sigma_GN' or 'sigma_RGN', got {sigma!r}")
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return float(sigma)


def _rng(generator) -> dict:
    # generator=None is left out rather than passed: torch's samplers with an explicit generator
    # argument reject the symbolic sizes torch.compile(dynamic=True) traces with
    return {} if generator is None else {"generator": generator}


def _standard_gamma(shape, alpha: float, generator, device) -> torch.Tensor:
    # torch's gamma sampler takes no generator: seed a forked default RNG from it instead,
    # so that a given generator still reproduces the same samples.
    conc = torch.full(shape, alpha, dtype=torch.float64, device=device)
    if generator is None:
        return torch._standard_gamma(conc)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch._standard_gamma(conc)


def sample_rgg(
    shape: Sequence[int],
    p: float = 1.0,
    mu: float = 0.0,
    sigma=None,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Samples of ReLU(GN_p(mu, sigma)) with the given shape (sigma defaults to sigma_GN)."""
    check_lp_parameter(p)
    check_number(mu, "mu")
    sigma = resolve_sigma(p, mu, sigma)
    if generator is not None:
        device = generator.device
    shape = tuple(shape)
    if p == 1.0:
        # Laplace by inversion: u in (-1/2, 1/2), x = -sign(u) log(1 - 2|u|).
        u = torch.rand(shape, **_rng(generator), device=device, dtype=torch.float32) - 0.5
        y = -torch.sign(u) * torch.log1p(-2.0 * u.abs())
    elif p == 2.0:
        y = torch.randn(shape, **_rng(generator), device=device, dtype=torch.float32)
    else:
        sign = torch.randint(0, 2, shape, **_rng(generator), device=device).to(torch.float32) * 2 - 1
        y = sign * _gn_magnitude(shape, p, generator, device).to(torch.float32)
    return torch.relu(mu + sigma * y).to(dtype)


def _gn_magnitude(shape, p: float, generator, device) -> torch.Tensor:
    """|X| of X ~ GN_p(0, 1) as (p G)^(1/p), G ~ Gamma(1/p, 1), in float64 and log space.

    For large p the shape 1/p is small and G has most of its mass far below the smallest float
    (p = 50: P(G < 1e-38) ~ 0.17), so G itself cannot be stored. Its log can:
    G = G' U^(1/alpha) with G' ~ Gamma(alpha + 1) and U ~ U(0, 1] (the gamma shape-augmentation
    identity), hence log G = log G' + log(U) / alpha, and |X| = exp((log p + log G) / p)."""
    alpha = 1.0 / p
    log_g = torch.log(_standard_gamma(shape, alpha + 1.0, generator, device))
    u = 1.0 - torch.rand(shape, **_rng(generator), device=device, dtype=torch.float64)  # (0, 1]
    log_g = log_g + torch.log(u) / alpha
    return torch.exp((math.log(p) + log_g) / p)
