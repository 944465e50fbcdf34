"""lejepa's univariate normality tests as fused statistics: the functions of ``fused_sigreg.univariate``
(the eager references, same names and arguments) plus ``backend=``.

Samples (..., N, K) -> one statistic per column (..., K), float32 (float64 for float64 samples). The EDF
family (Anderson-Darling, Cramer-von Mises, Watson, Shapiro-Wilk, entropy) sorts each column once and forms
the statistic and its gradient in the same pass (``csrc/sort_stat.h``, ``kernels/sort_stat.py``); the
moment family (Moments, VCReg, Extended Jarque-Bera) reads each column once for its power sums and once
more in backward for the gradient (``csrc/moment_stat.h``, ``kernels/moment_stat.py``). ``nll`` returns a
value per sample (..., N, K) from one sort per column (``csrc/sort_nll_cpu.cpp``). Other dtypes, forward-mode
AD and torch.func run the reference. ``sorted_input=True`` (the samples are already sorted) needs no
sort: it runs the reference.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch, univariate
from ..validation import as_int, check_number

__all__ = [
    "anderson_darling",
    "cramer_von_mises",
    "entropy",
    "extended_jarque_bera",
    "moments",
    "nll",
    "shapiro_wilk",
    "vcreg",
    "watson",
]


def _check_samples(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of samples (..., N, K), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be samples (..., N, K) with N, K >= 1, got shape {tuple(x.shape)}")


def _check_sorted(sorted_input) -> None:
    if not isinstance(sorted_input, bool):
        raise TypeError(f"sorted_input must be a bool, got {type(sorted_input).__name__}")


def anderson_darling(x: torch.Tensor, sorted_input: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    """Anderson-Darling A^2 of each column (``fused_sigreg.univariate.anderson_darling``)."""
    _check_samples(x)
    _check_sorted(sorted_input)
    if sorted_input:
        return univariate.anderson_darling(x, True)
    return dispatch.run("anderson_darling", (x,), backend, x)


def cramer_von_mises(x: torch.Tensor, sorted_input: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    """Cramer-von Mises of each column (``fused_sigreg.univariate.cramer_von_mises``)."""
    _check_samples(x)
    _check_sorted(sorted_input)
    if sorted_input:
        return univariate.cramer_von_mises(x, True)
    return dispatch.run("cramer_von_mises", (x,), backend, x)


def watson(x: torch.Tensor, sorted_input: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    """Watson's U^2 of each column (``fused_sigreg.univariate.watson``)."""
    _check_samples(x)
    _check_sorted(sorted_input)
    if sorted_input:
        return univariate.watson(x, True)
    return dispatch.run("watson", (x,), backend, x)


def shapiro_wilk(
    x: torch.Tensor,
    expectation_mode: str = "elfving",
    covariance_mode: str = "shapiro_francia",
    eps: float = 1e-5,
    sorted_input: bool = False,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """1 - |cos(weights, sorted column)| (``fused_sigreg.univariate.shapiro_wilk``)."""
    _check_samples(x)
    _check_sorted(sorted_input)
    univariate.shapiro_wilk_weights(2, expectation_mode, covariance_mode)  # checks both modes
    check_number(eps, "eps", 0.0, low_open=True)
    if sorted_input:
        return univariate.shapiro_wilk(x, expectation_mode, covariance_mode, eps, True)
    return dispatch.run("shapiro_wilk", (x,), backend, x, expectation_mode, covariance_mode, float(eps))


def entropy(
    x: torch.Tensor,
    m: int = 1,
    eps: float = 1e-5,
    method: str = "centered",
    sorted_input: bool = False,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Vasicek's entropy gap of each column (``fused_sigreg.univariate.entropy``)."""
    _check_samples(x)
    _check_sorted(sorted_input)
    m = as_int(m, "m", 1)
    check_number(eps, "eps", 0.0, low_open=True)
    if method not in univariate.ENTROPY_METHODS:
        raise ValueError(f"method must be one of {univariate.ENTROPY_METHODS}, got {method!r}")
    if sorted_input:
        return univariate.entropy(x, m, eps, method, True)
    return dispatch.run("entropy", (x,), backend, x, m, float(eps), method)


def moments(x: torch.Tensor, k_max: int = 4, backend: Optional[str] = None) -> torch.Tensor:
    """|mean| + sum_k e^-k |E x^k - E Z^k| of each column (``fused_sigreg.univariate.moments``); under
    torch.distributed the reference runs (it averages every moment over ranks)."""
    _check_samples(x)
    k_max = as_int(k_max, "k_max", 1)
    return dispatch.run("moments", (x,), backend, x, k_max)


def vcreg(x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """n mean^2 / var + (n - 1)(var - 1)^2 / 2 of each column (``fused_sigreg.univariate.vcreg``)."""
    _check_samples(x)
    return dispatch.run("vcreg", (x,), backend, x)


def extended_jarque_bera(x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """VCReg + n / 6 (skew^2 + (kurtosis - 3)^2 / 4) of each column
    (``fused_sigreg.univariate.extended_jarque_bera``)."""
    _check_samples(x)
    return dispatch.run("extended_jarque_bera", (x,), backend, x)


def nll(
    x: torch.Tensor,
    alpha: float = 0.5,
    rank: Optional[int] = None,
    n: Optional[int] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Per-sample NLL of each sample as its order statistic under N(0,1), (..., N, K) -> (..., N, K), in
    lejepa's order (``fused_sigreg.univariate.nll``). ``rank``: x holds that one order statistic of ``n``
    samples (elementwise, no sort: it runs the reference); ``alpha < 0.5`` writes NaN into the central samples."""
    _check_samples(x)
    check_number(alpha, "alpha", 0.0)
    if alpha > 0.5:
        raise ValueError(f"alpha must be a number in [0, 0.5] (the mass of each masked tail), got {alpha!r}")
    n_samples = x.shape[-2] if n is None else as_int(n, "n", 1)
    if rank is None:
        if n_samples != x.shape[-2]:
            raise ValueError(
                f"n must be the sample count N = {x.shape[-2]} when rank is None (every rank is scored), got {n}"
            )
        return dispatch.run("nll", (x,), backend, x, float(alpha), None, n_samples)
    rank = as_int(rank, "rank", 1)
    if rank > n_samples:
        raise ValueError(f"rank must be at most n = {n_samples} (one of n order statistics), got {rank}")
    return univariate.nll(x, alpha, rank, n_samples)
