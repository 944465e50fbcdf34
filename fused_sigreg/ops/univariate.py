"""lejepa's EDF-family normality tests as fused statistics: the functions of ``fused_sigreg.univariate``
(the eager references, same names and arguments) plus ``backend=``.

Samples (..., N, K) -> one statistic per column (..., K), float32 (float64 for float64 samples). The
``cpu`` backend sorts each column once and forms the statistic and its gradient in the same pass
(``csrc/sort_stat.h``); other devices and dtypes, forward-mode AD and torch.func run the reference.
``sorted_input=True`` (the samples are already sorted) needs no sort: it runs the reference.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch, univariate
from ..validation import as_int, check_number

__all__ = ["anderson_darling", "cramer_von_mises", "entropy", "shapiro_wilk", "watson"]


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
