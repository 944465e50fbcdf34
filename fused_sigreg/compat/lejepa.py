"""lejepa's ``SlicingUnivariateTest`` and ``EppsPulley`` (rbalestr-lab/lejepa), computed by fused_sigreg.

``from fused_sigreg.compat.lejepa import SlicingUnivariateTest, EppsPulley`` replaces
``from lejepa.multivariate import SlicingUnivariateTest`` / ``from lejepa.univariate import EppsPulley``:
same constructor arguments and defaults, same ``state_dict`` (``global_step``,
``univariate_test.{t, phi, weights}``, so checkpoints load both ways with ``strict=True``), same
directions at every step. With an ``EppsPulley`` inside, the projection and the ECF are fused
(``fused_sigreg.sigreg``); any other univariate test is applied to the projections as lejepa does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import reference
from ..ops.common import StepCounter, check_backend, check_input
from ..ops.sigreg import sigreg
from ..validation import as_int, check_number, check_quadrature, check_reduction, compute_dtype
from .rule import RuleBuffers, matmul_result_dtype

__all__ = ["EppsPulley", "SlicingUnivariateTest"]

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
        stats = test(x @ a)
        stats = reference.clip_statistics(stats, self.clip_value)
        return reference.reduce_statistics(stats, self.reduction)

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, reduction={self.reduction!r}, clip_value={self.clip_value}"
