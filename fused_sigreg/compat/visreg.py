"""The VISReg repository's loss modules (HaiyuWu/visreg, ``visreg/losses``), computed by fused_sigreg.

``from fused_sigreg.compat.visreg import VISReg, SlicedWasserstein, SIGReg`` replaces
``from visreg.losses import ...``: same constructors and defaults, same buffers (``SIGReg``'s
``t``, ``phi``, ``weights``; none for the others), inputs (V, B, D) (any (*, B, D) here), and the
directions drawn exactly as there: ``torch.randn(D, K)`` in the input's dtype from torch's global
RNG, normalised the module's way. Results have the official dtype: ``SIGReg`` the input's, the
sort losses float32 for 16-bit inputs (the official float32 target promotes them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.common import check_input
from ..ops.outside_graph import official_randn
from ..ops.sigreg import sigreg
from ..ops.sliced_wasserstein import sliced_wasserstein
from ..ops.visreg import visreg
from ..slicing import epps_pulley_quadrature
from ..validation import as_int, check_number, check_quadrature

__all__ = ["SIGReg", "SlicedWasserstein", "VISReg"]


def _gaussian(z: torch.Tensor, k: int) -> torch.Tensor:
    # the official draw: (D, K) in z's dtype on z's device from the global RNG
    return official_randn(z.shape[-1], k, z)


class VISReg(nn.Module):
    """``VISReg(num_projections=256, scale_weight=1.0, shape_weight=1.0, center_weight=1.0)``, plus ``backend=``.

    Directions ``F.normalize(randn(D, K), dim=0)``; the loss as ``fused_sigreg.visreg``.
    """

    def __init__(
        self,
        num_projections: int = 256,
        scale_weight: float = 1.0,
        shape_weight: float = 1.0,
        center_weight: float = 1.0,
        *,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.K = as_int(num_projections, "num_projections", 1)
        for name, weight in (
            ("scale_weight", scale_weight),
            ("shape_weight", shape_weight),
            ("center_weight", center_weight),
        ):
            check_number(weight, name)
        self.scale_weight, self.shape_weight, self.center_weight = scale_weight, shape_weight, center_weight
        self.backend = backend

    def draw_directions(self, z: torch.Tensor) -> torch.Tensor:
        """(D, K) unit directions, drawn as the official module draws them."""
        return F.normalize(_gaussian(z, self.K), dim=0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_input(z, "z", False)
        return visreg(
            z,
            directions=self.draw_directions(z),
            scale_weight=self.scale_weight,
            shape_weight=self.shape_weight,
            center_weight=self.center_weight,
            backend=self.backend,
        )


class SlicedWasserstein(nn.Module):
    """``SlicedWasserstein(num_projections=256)``, plus ``backend=``: quantile levels clamped to
    [1e-4, 1 - 1e-4], directions ``randn(D, K) / (norm + 1e-6)``."""

    def __init__(self, num_projections: int = 256, *, backend: Optional[str] = None):
        super().__init__()
        self.K = as_int(num_projections, "num_projections", 1)
        self.backend = backend

    def draw_directions(self, z: torch.Tensor) -> torch.Tensor:
        w = _gaussian(z, self.K)
        return w / (w.norm(dim=0, keepdim=True) + 1e-6)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_input(z, "z", False)
        return sliced_wasserstein(z, directions=self.draw_directions(z), quantile_clamp=1e-4, backend=self.backend)


class SIGReg(nn.Module):
    """``SIGReg(*, knots=17, t_max=3.0, num_projections=256)``, plus ``backend=``.

    Buffers ``t``, ``phi``, ``weights`` as the official module's; directions ``randn(D, K) / (norm +
    1e-12)``. The loss is the mean over (V, K) of B * sum_j w_j |ECF(t_j) - phi_j|^2 on each rank's own
    batch (the official module averages nothing over ranks), returned in the input's dtype.
    """

    def __init__(
        self, *, knots: int = 17, t_max: float = 3.0, num_projections: int = 256, backend: Optional[str] = None
    ):
        super().__init__()
        check_quadrature(t_max, knots)
        self.num_projections = as_int(num_projections, "num_projections", 1)
        self.knots, self.t_max, self.backend = int(knots), float(t_max), backend
        quad = epps_pulley_quadrature(self.t_max, self.knots)
        self.register_buffer("t", quad.t)
        self.register_buffer("phi", quad.phi)
        self.register_buffer("weights", quad.weights)

    def draw_directions(self, proj: torch.Tensor) -> torch.Tensor:
        a = _gaussian(proj, self.num_projections)
        return a / (a.norm(p=2, dim=0, keepdim=True) + 1e-12)

    def forward(self, proj: torch.Tensor) -> torch.Tensor:
        check_input(proj, "proj", False)
        loss = sigreg(
            proj,
            directions=self.draw_directions(proj),
            t_max=self.t_max,
            n_points=self.knots,
            backend=self.backend,
            sync=False,
        )
        return loss.to(proj.dtype)
