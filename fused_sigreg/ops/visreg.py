"""VISReg: centre, scale and shape (sliced Wasserstein to N(0, 1)) regularisation."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import dispatch
from ..validation import check_number
from .common import autocast_off
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
) -> torch.Tensor:
    """VISReg loss of z (VISReg repository, ``visreg/losses/visreg.py``).

    L = scale_weight * mean (sigma - 1)^2 + shape_weight * SWD((z - mu) / sg(sigma)) + center_weight * mean mu^2,
    mu the batch mean and sigma = ||z - mu||_2 / sqrt(N) + 1e-6 per view and dimension.

    Args:
        z: (N, D) or (V, N, D), any float dtype. N >= 2.
        num_projections / directions / generator: K slicing directions (default 256), as in ``sliced_wasserstein``.
        gather: all-gather the batch over ranks first (with gradients), as the VISReg trainer does.
    Returns: a float32 scalar (float64 for float64 z).
    """
    for name, weight in (
        ("scale_weight", scale_weight),
        ("shape_weight", shape_weight),
        ("center_weight", center_weight),
    ):
        check_number(weight, name)
    z, w, target = prepare_quantile_matching(z, "z", num_projections, directions, generator, None, gather, check_finite)
    return dispatch.run("visreg", (z, w), backend, z, w, target, scale_weight, shape_weight, center_weight)


class VISReg(nn.Module):
    """Drop-in for VISReg's ``VISReg(num_projections, scale_weight, shape_weight, center_weight)``."""

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
        self.num_projections = num_projections
        self.scale_weight, self.shape_weight, self.center_weight = scale_weight, shape_weight, center_weight
        self.gather, self.backend = gather, backend

    def forward(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return visreg(
            z,
            self.num_projections,
            generator=generator,
            scale_weight=self.scale_weight,
            shape_weight=self.shape_weight,
            center_weight=self.center_weight,
            gather=self.gather,
            backend=self.backend,
        )
