"""jepa-science's SIGReg (PyPI ``jepa-science`` 0.1.0, ``jepa_science.sigreg``), computed by fused_sigreg.

``from fused_sigreg.compat.jepa_science import SIGReg, sigreg_loss`` replaces
``from jepa_science import SIGReg, sigreg_loss``: same signatures, defaults and argument checks, the same
buffers (``t``, ``weights``), ``generator=`` at call time, and the same draw, ``torch.randn(D, K)`` in the
input's dtype from ``generator`` or torch's global RNG, columns divided by their norm. The reduction is
over the slice axis only, as there: (..., N, D) gives (...,) for ``"mean"`` / ``"sum"`` and (..., K) for
``"none"``, each leading index its own sample set; the result has the input's dtype (the arithmetic is
float32 for 16-bit input). jepa-science has no distributed handling and neither has this: each rank's
statistic is of its own batch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import slicing
from ..ops.common import check_backend, check_generator, check_input
from ..ops.outside_graph import official_randn
from ..ops.sigreg import sigreg
from ..validation import as_int, check_number
from .rule import RuleBuffers, matmul_result_dtype

__all__ = ["SIGReg", "epps_pulley_quadrature", "sigreg_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _check_rule(n_knots, t_max) -> None:
    n_knots = as_int(n_knots, "n_knots", 3)
    if n_knots % 2 != 1:
        raise ValueError(f"n_knots must be odd and >= 3 (jepa-science requires it), got {n_knots}")
    check_number(t_max, "t_max", 0.0, low_open=True)


def epps_pulley_quadrature(
    n_knots: int = 17, t_max: float = 3.0, *, dtype: torch.dtype = torch.float32, device=None
) -> Tuple[Tensor, Tensor]:
    """jepa-science's ``epps_pulley_quadrature``: knots linspace(0, t_max, n_knots) and the folded trapezoid
    weights times exp(-t^2/2), both (n_knots,) in ``dtype``."""
    _check_rule(n_knots, t_max)
    rule = slicing.epps_pulley_quadrature(float(t_max), int(n_knots), device=device, dtype=dtype)
    return rule.t, rule.weights


def _check_arguments(num_slices, n_knots, t_max, reduction) -> int:
    num_slices = as_int(num_slices, "num_slices", 1)
    _check_rule(n_knots, t_max)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return num_slices


def _statistic(embeddings, num_slices, n_knots, t_max, reduction, generator, backend) -> Tensor:
    check_input(embeddings, "embeddings", False)
    check_generator(generator, embeddings.device)
    a = official_randn(embeddings.shape[-1], num_slices, embeddings, generator)
    a = a / a.norm(p=2, dim=0, keepdim=True)
    stats = sigreg(embeddings, directions=a, t_max=t_max, n_points=n_knots, reduction=None, backend=backend, sync=False)
    if reduction == "mean":
        stats = stats.mean(dim=-1)
    elif reduction == "sum":
        stats = stats.sum(dim=-1)
    return stats.to(matmul_result_dtype(embeddings, embeddings.dtype))


def sigreg_loss(
    embeddings: Tensor,
    num_slices: int = 1024,
    n_knots: int = 17,
    t_max: float = 3.0,
    *,
    reduction: str = "mean",
    generator: Optional[torch.Generator] = None,
    backend: Optional[str] = None,
) -> Tensor:
    """jepa-science's ``sigreg_loss``: per leading index, the slices' Epps–Pulley statistics reduced over K."""
    num_slices = _check_arguments(num_slices, n_knots, t_max, reduction)
    check_backend(backend)
    return _statistic(embeddings, num_slices, int(n_knots), float(t_max), reduction, generator, backend)


class SIGReg(RuleBuffers):
    """jepa-science's ``SIGReg(num_slices=1024, n_knots=17, t_max=3.0, *, reduction="mean")``, plus
    ``backend=``; ``forward(embeddings, *, generator=None)``."""

    def __init__(
        self,
        num_slices: int = 1024,
        n_knots: int = 17,
        t_max: float = 3.0,
        *,
        reduction: str = "mean",
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.num_slices = _check_arguments(num_slices, n_knots, t_max, reduction)
        check_backend(backend)
        self.n_knots, self.reduction, self.backend = int(n_knots), reduction, backend
        self.register_rule(t_max, self.n_knots, names=("t", "weights"))

    def forward(self, embeddings: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
        return _statistic(
            embeddings, self.num_slices, self.n_knots, self.t_max, self.reduction, generator, self.backend
        )

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, n_knots={self.n_knots}, t_max={self.t_max:g}, reduction={self.reduction!r}"
        )
