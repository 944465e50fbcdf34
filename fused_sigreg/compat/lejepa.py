"""lejepa's ``SlicingUnivariateTest`` and ``EppsPulley`` (rbalestr-lab/lejepa), computed by fused_sigreg.

``from fused_sigreg.compat.lejepa import SlicingUnivariateTest, EppsPulley`` replaces
``from lejepa.multivariate import SlicingUnivariateTest`` / ``from lejepa.univariate import EppsPulley``:
same constructor arguments and defaults, same ``state_dict`` (``global_step``,
``univariate_test.{t, phi, weights}``, so checkpoints load both ways with ``strict=True``), same
directions at every step. With an ``EppsPulley`` inside, the projection and the ECF are fused
(``fused_sigreg.sigreg``); the EDF-family tests (``AndersonDarling``, ``CramerVonMises``, ``Watson``,
``ShapiroWilk``, ``Entropy``) sort each slice once and form the statistic and its gradient in one pass
(``fused_sigreg.ops.univariate``); the moment tests (``Moments``, ``VCReg``, ``ExtendedJarqueBera``) read
each slice once for its power sums and once for the gradient; ``NLL`` sorts each slice once and writes
every sample's loss and slope in the same pass.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import reference, univariate
from ..ops import univariate as fused
from ..ops.common import StepCounter, check_backend, check_input
from ..ops.sigreg import sigreg
from ..validation import as_int, check_number, check_quadrature, check_reduction, compute_dtype
from .rule import RuleBuffers, matmul_result_dtype

__all__ = [
    "AndersonDarling",
    "CramerVonMises",
    "EppsPulley",
    "Entropy",
    "ExtendedJarqueBera",
    "Moments",
    "NLL",
    "ShapiroWilk",
    "SlicingUnivariateTest",
    "UnivariateTest",
    "VCReg",
    "Watson",
]

INTEGRATIONS = ("trapezoid",)
SAMPLERS = ("gaussian",)


class EppsPulley(RuleBuffers):
    """lejepa's ``EppsPulley(t_max=3, n_points=17, integration="trapezoid")``.

    Buffers ``t``, ``phi``, ``weights`` (T,) float32 as lejepa's: knots linspace(0, t_max, n_points),
    the N(0,1) characteristic function at them, and trapezoid weights (doubled for the folded half-line)
    times phi. Called alone on projections (*, N, K) it returns the statistic per slice (*, K), in
    float32 (float64 for float64 input), averaged over ranks like lejepa's; inside
    ``SlicingUnivariateTest`` it is fused with the projection.
    """

    def __init__(self, t_max: float = 3, n_points: int = 17, integration: str = "trapezoid"):
        super().__init__()
        check_quadrature(t_max, n_points)
        n_points = as_int(n_points, "n_points", 3)
        if n_points % 2 != 1:
            raise ValueError(f"n_points must be odd (lejepa's EppsPulley requires it), got {n_points}")
        if integration not in INTEGRATIONS:
            raise ValueError(
                f"integration must be one of {INTEGRATIONS} (lejepa computes no other), got {integration!r}"
            )
        self.integration, self.n_points = integration, n_points
        self.register_rule(t_max, n_points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", False)
        return reference.epps_pulley(x.to(compute_dtype(x)), self.t_max, self.n_points)

    def extra_repr(self) -> str:
        return f"t_max={self.t_max:g}, n_points={self.n_points}, integration={self.integration!r}"


class UnivariateTest(nn.Module):
    """lejepa's ``UnivariateTest(eps=1e-5, sorted=False)`` base: samples (*, N, K) -> a statistic per column (*, K).

    Every leading index is its own sample set (lejepa reads dim 0 for some quantities and dim -2 for
    others on 3-D input, which gives numbers without meaning there: docs/compat.md). ``sorted=True``
    declares the input already sorted along the samples.
    """

    def __init__(self, eps: float = 1e-5, sorted: bool = False):
        super().__init__()
        check_number(eps, "eps", 0.0, low_open=True)
        if not isinstance(sorted, bool):
            raise TypeError(f"sorted must be a bool, got {type(sorted).__name__}")
        self.eps, self.sorted = eps, sorted

    def _samples(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self).statistic is UnivariateTest.statistic:
            raise NotImplementedError(f"{type(self).__name__} defines neither forward nor statistic")
        return self.statistic(x)

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        """The statistic per column (per sample for ``NLL``) on ``backend`` (``SlicingUnivariateTest``
        passes its own)."""
        return self.forward(x)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}, sorted={self.sorted}"


class AndersonDarling(UnivariateTest):
    """lejepa's ``AndersonDarling(eps=1e-5, sorted=False)`` (``fused_sigreg.univariate.anderson_darling``)."""

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.anderson_darling(self._samples(x), self.sorted, backend=backend)


class CramerVonMises(UnivariateTest):
    """lejepa's ``CramerVonMises(eps=1e-5, sorted=False)`` (``fused_sigreg.univariate.cramer_von_mises``)."""

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.cramer_von_mises(self._samples(x), self.sorted, backend=backend)


class Watson(CramerVonMises):
    """lejepa's ``Watson(eps=1e-5, sorted=False)`` (``fused_sigreg.univariate.watson``)."""

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.watson(self._samples(x), self.sorted, backend=backend)


class ShapiroWilk(UnivariateTest):
    """lejepa's ``ShapiroWilk(expectation_mode="elfving", covariance_mode="shapiro_francia", eps=1e-5,
    sorted=False)`` (``fused_sigreg.univariate.shapiro_wilk``)."""

    def __init__(
        self,
        expectation_mode: str = "elfving",
        covariance_mode: str = "shapiro_francia",
        eps: float = 1e-5,
        sorted: bool = False,
    ):
        super().__init__(eps=eps, sorted=sorted)
        univariate.shapiro_wilk_weights(2, expectation_mode, covariance_mode)  # checks both modes
        self.expectation_mode, self.covariance_mode = expectation_mode, covariance_mode

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        x = self._samples(x)
        return fused.shapiro_wilk(x, self.expectation_mode, self.covariance_mode, self.eps, self.sorted, backend)

    def extra_repr(self) -> str:
        modes = f"expectation_mode={self.expectation_mode!r}, covariance_mode={self.covariance_mode!r}"
        return f"{modes}, {super().extra_repr()}"


class Entropy(UnivariateTest):
    """lejepa's ``Entropy(m=1, eps=1e-5, method="centered", sorted=False)`` (``fused_sigreg.univariate.entropy``)."""

    def __init__(self, m: int = 1, eps: float = 1e-5, method: str = "centered", sorted: bool = False):
        super().__init__(eps=eps, sorted=sorted)
        self.m = as_int(m, "m", 1)
        if method not in univariate.ENTROPY_METHODS:
            raise ValueError(f"method must be one of {univariate.ENTROPY_METHODS}, got {method!r}")
        self.method = method

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        x = self._samples(x)
        spacing = 2 * self.m if self.method == "centered" else self.m
        if x.shape[-2] <= spacing:
            raise ValueError(
                f"Entropy(m={self.m}, method={self.method!r}) needs more than {spacing} samples, got {x.shape[-2]}"
            )
        return fused.entropy(x, self.m, self.eps, self.method, self.sorted, backend)

    def extra_repr(self) -> str:
        return f"m={self.m}, method={self.method!r}, " + super().extra_repr()


class Moments(UnivariateTest):
    """lejepa's ``Moments(k_max=4, sampler=...)`` (``sampler`` unused there and here); buffers ``moments``
    (the even N(0,1) moments, (k_max // 2, 1)) and ``weights`` (e^-k, k = 2..k_max), as lejepa's. Under
    torch.distributed the means are averaged over ranks (lejepa discards that all-reduce and divides the
    statistic by the world size)."""

    def __init__(self, k_max: int = 4, sampler=None):
        super().__init__(sorted=True)
        self.k_max = as_int(k_max, "k_max", 1)
        self.sampler = sampler
        self.register_buffer("moments", univariate.gaussian_moments(self.k_max))
        self.register_buffer("weights", torch.arange(2, self.k_max + 1).neg().exp())

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.moments(self._samples(x), self.k_max, backend=backend)

    def extra_repr(self) -> str:
        return f"k_max={self.k_max}"


class VCReg(UnivariateTest):
    """lejepa's ``VCReg(eps=1e-5, sorted=False)`` (``fused_sigreg.univariate.vcreg``)."""

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.vcreg(self._samples(x), backend=backend)


class ExtendedJarqueBera(UnivariateTest):
    """lejepa's ``ExtendedJarqueBera(eps=1e-5, sorted=False)`` (``fused_sigreg.univariate.extended_jarque_bera``)."""

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        return fused.extended_jarque_bera(self._samples(x), backend=backend)


class NLL(UnivariateTest):
    """lejepa's ``NLL(alpha=0.5, k=None, N=None)`` (``fused_sigreg.univariate.nll``): per-sample values
    (*, N, K), not a statistic per column; ``alpha < 0.5`` writes NaN into the central samples as lejepa does."""

    def __init__(self, alpha: float = 0.5, k: Optional[int] = None, N: Optional[int] = None):
        super().__init__()
        check_number(alpha, "alpha", 0.0)
        if alpha > 0.5:
            raise ValueError(f"alpha must be a number in [0, 0.5] (the mass of each masked tail), got {alpha!r}")
        self.alpha = alpha
        self.k = None if k is None else as_int(k, "k", 1)
        self.N = None if N is None else as_int(N, "N", 1)
        if self.k is not None and self.N is not None and self.k > self.N:
            raise ValueError(f"k must be at most N (the rank of one of N order statistics), got k={k}, N={N}")

    def statistic(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        x = self._samples(x)
        n = self.N if self.N is not None else x.shape[-2]
        if self.k is not None and self.k > n:
            raise ValueError(f"k must be at most the sample count {n}, got {self.k}")
        if self.k is None and n != x.shape[-2]:  # lejepa's constants of N ranks cannot broadcast against N' samples
            return univariate.nll(x, self.alpha, None, n)
        return fused.nll(x, self.alpha, self.k, n, backend=backend)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, k={self.k}, N={self.N}"


class SlicingUnivariateTest(StepCounter):
    """lejepa's ``SlicingUnivariateTest(univariate_test, num_slices, reduction="mean", sampler="gaussian",
    clip_value=None)``, plus ``backend=``.

    Input (*, N, D); output a scalar, or (*, num_slices) for ``reduction=None``. Each call draws
    lejepa's directions for ``global_step`` (the maximum over ranks), then increments the buffer.
    """

    def __init__(
        self,
        univariate_test: nn.Module,
        num_slices: int,
        reduction: Optional[str] = "mean",
        sampler: str = "gaussian",
        clip_value: Optional[float] = None,
        *,
        backend: Optional[str] = None,
    ):
        super().__init__()
        if not isinstance(univariate_test, nn.Module):
            raise TypeError(f"univariate_test must be a torch.nn.Module, got {type(univariate_test).__name__}")
        check_reduction(reduction)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS} (lejepa draws no other), got {sampler!r}")
        if clip_value is not None:
            check_number(clip_value, "clip_value")
        check_backend(backend)
        self.univariate_test = univariate_test
        self.num_slices = as_int(num_slices, "num_slices", 1)
        self.reduction, self.sampler, self.clip_value, self.backend = reduction, sampler, clip_value, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", False)
        # lejepa draws in torch's default dtype from a generator seeded with the step
        a, _ = self.draw(x, self.num_slices, lejepa=True, dtype=torch.get_default_dtype())
        test = self.univariate_test
        if isinstance(test, EppsPulley):
            stats = sigreg(
                x,
                directions=a,
                t_max=test.t_max,
                n_points=test.n_points,
                reduction=self.reduction,
                clip_value=self.clip_value,
                backend=self.backend,
            )
            # lejepa's last step is a matmul with the weights: under autocast its result has the autocast dtype
            return stats.to(matmul_result_dtype(x, stats.dtype))
        samples = x @ a
        stats = test.statistic(samples, self.backend) if isinstance(test, UnivariateTest) else test(samples)
        stats = reference.clip_statistics(stats, self.clip_value)
        return reference.reduce_statistics(stats, self.reduction)

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, reduction={self.reduction!r}, clip_value={self.clip_value}"
