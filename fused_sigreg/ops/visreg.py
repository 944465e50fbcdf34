"""VISReg: centre, scale and shape (sliced Wasserstein to N(0, 1)) regularisation."""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..validation import as_int, check_number
from .common import StepCounter, autocast_off, check_backend, check_input
from .sliced_wasserstein import DEFAULT_NUM_PROJECTIONS, prepare_quantile_matching


@autocast_off
def visreg(
    z: torch.Tensor,
    num_projections: Optional[int] = None,
    directions: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    scale_weight: float = 1.0,
    shape_weight: float = 1.0,
    center_weight: float = 1.0,
    gather: bool = False,
    backend: Optional[str] = None,
    check_finite: bool = False,
    projections: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """VISReg loss of z (VISReg repository, ``visreg/losses/visreg.py``).

    L = scale_weight * mean (sigma - 1)^2 + shape_weight * SWD((z - mu) / sg(sigma)) + center_weight * mean mu^2,
    mu the batch mean and sigma = ||z - mu||_2 / sqrt(N) + 1e-6 per view and dimension.

    Args:
        z: (*, N, D), any float dtype; leading indices are views. N >= 1 (at N = 1, z - mu = 0 and
            sigma = 1e-6: the shape term is 0, the scale term (1e-6 - 1)^2, the centre term mean z^2).
        num_projections / directions / projections / generator: K slicing directions (default 256),
            as in ``sliced_wasserstein``.
        gather: all-gather the batch over ranks first (with gradients), as the VISReg trainer does.
    Returns: a float32 scalar (float64 for float64 z).
    """
    for name, weight in (
        ("scale_weight", scale_weight),
        ("shape_weight", shape_weight),
        ("center_weight", center_weight),
    ):
        check_number(weight, name)
    z, w, target = prepare_quantile_matching(
        z, "z", num_projections, directions, projections, generator, None, gather, check_finite
    )
    return dispatch.run("visreg", (z, w), backend, z, w, target, scale_weight, shape_weight, center_weight)


class VISReg(StepCounter):
    """VISReg's ``VISReg(num_projections, scale_weight, shape_weight, center_weight)`` on (*, N, D).

    Directions are drawn from a generator seeded with ``global_step`` (``StepCounter``), or from
    ``generator`` when one is passed; torch's global RNG is never touched. The VISReg repository's
    exact module (same RNG use) is ``fused_sigreg.compat.visreg``.
    """

    def __init__(
        self,
        num_projections: int = DEFAULT_NUM_PROJECTIONS,
        scale_weight: float = 1.0,
        shape_weight: float = 1.0,
        center_weight: float = 1.0,
        gather: bool = False,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.num_projections = as_int(num_projections, "num_projections", 1)
        for name, weight in (
            ("scale_weight", scale_weight),
            ("shape_weight", shape_weight),
            ("center_weight", center_weight),
        ):
            check_number(weight, name)
        check_backend(backend)
        self.scale_weight, self.shape_weight, self.center_weight = scale_weight, shape_weight, center_weight
        self.gather, self.backend = gather, backend

    def forward(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        check_input(z, "z", False)
        directions, _ = self.draw(z, self.num_projections, generator)
        return visreg(
            z,
            directions=directions,
            scale_weight=self.scale_weight,
            shape_weight=self.shape_weight,
            center_weight=self.center_weight,
            gather=self.gather,
            backend=self.backend,
        )
