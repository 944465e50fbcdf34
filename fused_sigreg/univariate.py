"""Eager references of lejepa's univariate normality tests, written from their formulas.

Each takes samples x (..., N, K): N samples along dim -2, K independent columns (slices), every leading
index its own sample set, and returns the statistic per column (..., K) in x's compute dtype (float32
for 16-bit input, float64 for float64). They are the definition the sliced statistics are tested
against, as ``reference`` is for the fused ops. Families (LeJEPA paper, section 4):

- EDF (sort) based: ``anderson_darling``, ``cramer_von_mises``, ``watson``, ``shapiro_wilk``, ``entropy``;
- moment based: ``moments``, ``vcreg``, ``extended_jarque_bera``.

``sorted_input=True`` declares x already sorted along dim -2 (lejepa's ``sorted=True``).
"""

from __future__ import annotations

import math

import torch

from .distributed import all_reduce_mean
from .slicing import _cached
from .validation import compute_dtype

__all__ = [
    "anderson_darling",
    "cramer_von_mises",
    "entropy",
    "extended_jarque_bera",
    "log_norm_cdf",
    "moments",
    "norm_cdf",
    "shapiro_wilk",
    "shapiro_wilk_weights",
    "vcreg",
    "watson",
]


def _clamp_is_closed() -> bool:
    """Whether torch's clamp passes the gradient at its bounds (torch 2.11 does, 2.14 does not). The
    references clamp (log_norm_cdf at +-3, entropy's spacings at eps), so their gradient at a bound is
    torch's; the fused statistics follow it (``CLAMP_CLOSED``)."""
    x = torch.ones((), requires_grad=True)
    (grad,) = torch.autograd.grad(x.clamp(min=1.0), x)
    return bool(grad != 0)


# decided at import, outside any torch.compile trace
CLAMP_CLOSED = _clamp_is_closed()

EXPECTATION_MODES = ("elfving", "blom", "rahman")
COVARIANCE_MODES = ("shapiro_francia", "rahman")
ENTROPY_METHODS = ("centered", "right")


def _prepare(x: torch.Tensor, sorted_input: bool) -> torch.Tensor:
    x = x.to(compute_dtype(x))
    return x if sorted_input else x.sort(dim=-2).values


def norm_cdf(x: torch.Tensor) -> torch.Tensor:
    """The N(0,1) CDF, (1 + erf(x / sqrt 2)) / 2."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _tail_scale(y: torch.Tensor) -> torch.Tensor:
    # the denominator of the tail approximation of the Mills ratio lejepa uses, for y >= 3
    return torch.sqrt(0.656 * y + 0.344 * y.square() + 5.334)


def log_norm_cdf(x: torch.Tensor, thresh: float = 3.0) -> torch.Tensor:
    """log Phi(x) as lejepa computes it: log of the CDF on [-thresh, thresh], a tail approximation outside.

    Each branch sees x clamped to its own region, so the branches not taken stay finite and their (zero)
    gradient cannot turn into NaN through torch.where.
    """
    middle = torch.log(norm_cdf(x.clamp(-thresh, thresh)))
    xl = x.clamp(max=-thresh)
    left = -(xl.square() + math.log(2.0 * math.pi)) / 2.0 - torch.log(_tail_scale(-xl))
    xr = x.clamp(min=thresh)
    right = torch.log1p(-torch.exp(-xr.square() / 2.0) / math.sqrt(2.0 * math.pi) / _tail_scale(xr))
    return torch.where(x < -thresh, left, torch.where(x > thresh, right, middle))


def _ranks(n: int, like: torch.Tensor) -> torch.Tensor:
    """i = 1..n as an (n, 1) column in like's dtype and device."""
    return torch.arange(1, n + 1, dtype=like.dtype, device=like.device).unsqueeze(-1)


def anderson_darling(x: torch.Tensor, sorted_input: bool = False) -> torch.Tensor:
    """A^2 = -n - sum_i (2i - 1) [log Phi(s_i) + log Phi(-s_{n+1-i})] / n, s sorted."""
    s = _prepare(x, sorted_input)
    n = s.shape[-2]
    a = log_norm_cdf(s) + log_norm_cdf(-s.flip(-2))
    # a contraction over the samples (as lejepa's tensordot): -n + sum is a cancellation, so the
    # summation order shows in the last digits
    weights = 2.0 * _ranks(n, s).squeeze(-1) - 1.0
    return -n - torch.tensordot(a, weights, dims=([a.dim() - 2], [0])) / n


def cramer_von_mises(x: torch.Tensor, sorted_input: bool = False) -> torch.Tensor:
    """mean_i (Phi(s_i) - (2i - 1) / (2n))^2 (lejepa's form: no 1 / (12 n) term)."""
    s = _prepare(x, sorted_input)
    n = s.shape[-2]
    levels = (2.0 * _ranks(n, s) - 1.0) / (2 * n)
    return (levels - norm_cdf(s)).square().mean(dim=-2)


def watson(x: torch.Tensor, sorted_input: bool = False) -> torch.Tensor:
    """Watson's U^2: Cramer-von Mises minus (mean_i Phi(x_i) - 1/2)^2."""
    s = _prepare(x, sorted_input)
    return cramer_von_mises(s, True) - (norm_cdf(s).mean(dim=-2) - 0.5).square()


def _shapiro_wilk_weights(n: int, expectation_mode: str, covariance_mode: str, device) -> torch.Tensor:
    i = torch.arange(1, n + 1, dtype=torch.float32, device=device)
    if expectation_mode == "elfving":
        p = (i - math.pi / 8) / (n + 0.25)
    elif expectation_mode == "blom":
        p = (i - 0.375) / (n + 0.25)
    else:
        p = i / (n + 1)
    m = math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)  # expected normal order statistics (approximate)
    if covariance_mode == "shapiro_francia":
        a = m
    else:  # Rahman & Govindarajulu's approximation of V^-1 m (tridiagonal in the normal density)
        phi = torch.exp(-m.square() / 2 - math.log(math.sqrt(2.0 * math.pi)))  # the density, as log_prob's exp
        cross = phi[1:] * phi[:-1]
        a = 2.0 * m * phi.square()
        a = a - torch.cat([m[1:] * cross, cross.new_zeros(1)]) - torch.cat([cross.new_zeros(1), m[:-1] * cross])
    return a / a.norm()


def shapiro_wilk_weights(
    n: int, expectation_mode: str = "elfving", covariance_mode: str = "shapiro_francia", device=None
) -> torch.Tensor:
    """The unit (n,) float32 coefficient vector lejepa correlates the sorted sample with; built once per
    (n, modes, device) and shared: read-only."""
    if expectation_mode not in EXPECTATION_MODES:
        raise ValueError(f"expectation_mode must be one of {EXPECTATION_MODES}, got {expectation_mode!r}")
    if covariance_mode not in COVARIANCE_MODES:
        raise ValueError(f"covariance_mode must be one of {COVARIANCE_MODES}, got {covariance_mode!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = ("shapiro_wilk", int(n), expectation_mode, covariance_mode, device)
    return _cached(key, lambda: _shapiro_wilk_weights(int(n), expectation_mode, covariance_mode, device))


def shapiro_wilk(
    x: torch.Tensor,
    expectation_mode: str = "elfving",
    covariance_mode: str = "shapiro_francia",
    eps: float = 1e-5,
    sorted_input: bool = False,
) -> torch.Tensor:
    """1 - |cos(a, s)|: one minus the absolute cosine between the sorted sample and the weights a."""
    s = _prepare(x, sorted_input)
    a = shapiro_wilk_weights(s.shape[-2], expectation_mode, covariance_mode, s.device).to(s.dtype).unsqueeze(-1)
    return 1.0 - torch.nn.functional.cosine_similarity(a, s, dim=-2, eps=eps).abs()


def entropy(
    x: torch.Tensor, m: int = 1, eps: float = 1e-5, method: str = "centered", sorted_input: bool = False
) -> torch.Tensor:
    """Vasicek's sample-entropy gap to N(0, sd^2): spacings of order m (2m centred), logs floored at eps.

    "centered": exp(H_normal - H_m) with H_m = sum log(s_{i+m} - s_{i-m}) / n (the 2m end spacings taken
    from the extremes) - log n + log 2m + log sd; "right": the gap itself with one-sided spacings.
    """
    if method not in ENTROPY_METHODS:
        raise ValueError(f"method must be one of {ENTROPY_METHODS}, got {method!r}")
    s = _prepare(x, sorted_input)
    n = s.shape[-2]
    sd = s.std(dim=-2)
    h_normal = 0.5 * math.log(2.0 * math.pi * math.e)
    if method == "right":
        spacings = (s[..., m:, :] - s[..., :-m, :]).clamp(min=eps).log().sum(dim=-2) / n
        return h_normal - spacings - math.log(n) + torch.log(m * sd)
    spacings = (s[..., 2 * m :, :] - s[..., : -2 * m, :]).clamp(min=eps).log().sum(dim=-2) / n
    low, high = s[..., :1, :], s[..., -1:, :]
    ends = (s[..., 1 : 2 * m + 1, :] - low).clamp(min=eps).log() + (high - s[..., -2 * m - 1 : -1, :]).clamp(
        min=eps
    ).log()
    spacings = spacings + ends.sum(dim=-2) / n
    return torch.exp(h_normal - spacings - math.log(n) + math.log(2 * m) + torch.log(sd))


def gaussian_moments(k_max: int) -> torch.Tensor:
    """E Z^k of N(0,1) for even k = 2..k_max: (k - 1)!!, as a (k_max // 2, 1) float32 column (lejepa's buffer)."""
    return torch.tensor([[float(math.prod(range(k - 1, 0, -2)))] for k in range(2, k_max + 1, 2)])


def moments(x: torch.Tensor, k_max: int = 4) -> torch.Tensor:
    """|mean| + sum_{k=2..k_max} e^-k |E x^k - E Z^k| (odd E Z^k = 0); the means are over every rank's
    samples under torch.distributed."""
    x = x.to(compute_dtype(x))
    stat = all_reduce_mean(x.mean(dim=-2)).abs()
    target = gaussian_moments(k_max).to(x)
    for k in range(2, k_max + 1):
        mk = all_reduce_mean(x.pow(k).mean(dim=-2))
        if k % 2 == 0:
            mk = mk - target[k // 2 - 1]
        stat = stat + math.exp(-k) * mk.abs()
    return stat


def vcreg(x: torch.Tensor) -> torch.Tensor:
    """n mean^2 / var + (n - 1)(var - 1)^2 / 2 (unbiased variance): the chi^2(2) of mean 0 and variance 1."""
    x = x.to(compute_dtype(x))
    n = x.shape[-2]
    mean, var = x.mean(dim=-2), x.var(dim=-2)
    return mean.square() / (var / n) + (var - 1.0).square() * ((n - 1) / 2.0)


def extended_jarque_bera(x: torch.Tensor) -> torch.Tensor:
    """vcreg + n / 6 (skew^2 + (kurtosis - 3)^2 / 4), skew and kurtosis standardised by the unbiased sd
    (floored at 1e-8)."""
    x = x.to(compute_dtype(x))
    n = x.shape[-2]
    mean, var = x.mean(dim=-2, keepdim=True), x.var(dim=-2, keepdim=True)
    z = (x - mean) / var.sqrt().clamp(min=1e-8)
    skew, kurt = z.pow(3).mean(dim=-2), z.pow(4).mean(dim=-2)
    return vcreg(x) + n / 6.0 * (skew.square() + 0.25 * (kurt - 3.0).square())


def _order_constants(n: int, rank, device):
    """(r - 1, n - r, log n! / ((r - 1)! (n - r)!)) for the ranks r = 1..n, or the one ``rank``: float32
    columns, accumulated as lejepa does."""
    log_n_fact = torch.arange(1, n + 1, dtype=torch.float32, device=device).log().sum()
    if rank is not None:
        below = torch.arange(1, rank, dtype=torch.float32, device=device).log().sum()
        above = torch.arange(1, n - rank + 1, dtype=torch.float32, device=device).log().sum()
        k = torch.full((1, 1), rank - 1, dtype=torch.float32, device=device)
        return k, n - 1 - k, (log_n_fact - below - above).reshape(1, 1)
    k = torch.arange(n, dtype=torch.float32, device=device)
    log_fact = k.log()
    log_fact[0] = 0.0
    log_fact = log_fact.cumsum(0)  # log (r - 1)!
    return k.unsqueeze(-1), k.flip(0).unsqueeze(-1), (log_n_fact - log_fact - log_fact.flip(0)).unsqueeze(-1)


def _order_statistic_nll(s: torch.Tensor, n: int, rank, device) -> torch.Tensor:
    below, above, cst = _order_constants(n, rank, device)
    log_density = -s.square() / 2 - math.log(math.sqrt(2.0 * math.pi))
    return -(cst + log_norm_cdf(s) * below + log_norm_cdf(-s) * above + log_density)


def _nll_cutoffs(n: int, alpha: float, rank, device) -> torch.Tensor:
    """(2, R, 1): the central interval of each order statistic's density (R = n ranks, or the one rank)
    holding 1 - 2 alpha, from the density integrated by trapezoids on 1000 points of [-7, 7], as lejepa
    finds it."""
    grid = torch.linspace(-7, 7, 1000, device=device)
    ranks = range(1, n + 1) if rank is None else [rank]
    density = torch.stack([_order_statistic_nll(grid, n, r, device).reshape(-1) for r in ranks]).neg().exp()
    cdf = torch.cumsum((density[:, 1:] + density[:, :-1]) * ((grid[1] - grid[0]) / 2), 1)
    low = (cdf > alpha).float().argmax(1)
    high = (cdf > 1 - alpha).float().argmax(1)
    return torch.stack([grid[low], grid[high]], 0).unsqueeze(-1)


def nll(x: torch.Tensor, alpha: float = 0.5, rank=None, n=None) -> torch.Tensor:
    """Per-sample negative log-likelihood of each sample as its order statistic under N(0,1): samples
    (..., N, K) -> (..., N, K). ``rank``: x holds that one order statistic of ``n`` samples (default N),
    unsorted. ``alpha < 0.5``: samples inside their order statistic's central 1 - 2 alpha interval are
    NaN (lejepa's masking, so any mean over them is NaN)."""
    x = x.to(compute_dtype(x))
    n_samples = x.shape[-2] if n is None else int(n)
    s, order = (x, None) if rank is not None else x.sort(dim=-2)
    loss = _order_statistic_nll(s, n_samples, rank, x.device)
    if alpha < 0.5:
        cutoffs = _nll_cutoffs(n_samples, alpha, rank, x.device).to(s.dtype)
        loss = torch.where((s > cutoffs[0]) & (s < cutoffs[1]), torch.full_like(loss, float("nan")), loss)
    if order is None:
        return loss
    return loss.gather(-2, order)  # lejepa indexes the sorted losses by the sort permutation
