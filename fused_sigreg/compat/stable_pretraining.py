"""stable-pretraining's LeJEPA losses (PyPI ``stable-pretraining`` 0.1.8,
``stable_pretraining/methods/lejepa.py``), computed by fused_sigreg.

``from fused_sigreg.compat.stable_pretraining import SlicedEppsPulley, EppsPulley, LeJEPA`` replaces the
same names of ``stable_pretraining.methods.lejepa`` for the loss: same constructors and defaults, same
state_dict (``global_step``, ``ep.t``, ``ep.phi``, ``ep.weights``; loadable both ways with ``strict=True``),
the same directions at every step (a generator seeded with ``global_step``, float32 ``randn(D, K)``), and
``LeJEPA._compute_loss``, the static loss of its method class. The projection and ECF run fused.

stable-pretraining treats dim 0 as the sample axis: ``EppsPulley`` on (N, S) gives (S,), and a 3-D input
(V, N, D) is taken as V samples of N * D values; both modules keep that, so a one-line swap changes no
number (``LeJEPA._compute_loss`` pools the views into one (V * N, D) batch first, as there).

Under torch.distributed the ECF means are averaged over ranks and the statistic scaled by the global
batch, as lejepa does and as stable-pretraining means to: its ``EppsPulley`` discards its all-reduce
result and multiplies by the world size, returning world_size x each rank's local statistic, and freezes
the DDP state when the module is built (docs/compat.md).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from ..ops.common import StepCounter, check_backend, check_input
from ..ops.sigreg import sigreg as sliced_epps_pulley
from ..validation import as_int, check_number, compute_dtype
from .rule import RuleBuffers, matmul_result_dtype

__all__ = ["EppsPulley", "LeJEPA", "SlicedEppsPulley"]


def _samples_first(x: Tensor) -> Tensor:
    # stable-pretraining counts and averages over dim 0: as (..., N, .) that is dim 0 moved to dim -2
    return x if x.dim() == 2 else x.movedim(0, -2)


class EppsPulley(RuleBuffers):
    """stable-pretraining's ``EppsPulley(t_max=3.0, n_points=17)``: samples (N, S) -> statistic per slice (S,),
    float32 (float64 for float64 input, which stable-pretraining's float32 weights reject)."""

    def __init__(self, t_max: float = 3.0, n_points: int = 17):
        super().__init__()
        n_points = as_int(n_points, "n_points", 3)
        if n_points % 2 != 1:
            raise ValueError(f"n_points must be odd (stable-pretraining's EppsPulley requires it), got {n_points}")
        check_number(t_max, "t_max", 0.0, low_open=True)
        self.n_points = n_points
        self.register_rule(t_max, n_points)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, "x", False)
        return reference.epps_pulley(_samples_first(x).to(compute_dtype(x)), self.t_max, self.n_points)

    def extra_repr(self) -> str:
        return f"t_max={self.t_max:g}, n_points={self.n_points}"


class SlicedEppsPulley(StepCounter):
    """stable-pretraining's ``SlicedEppsPulley(num_slices=1024, t_max=3.0, n_points=17)``, plus ``backend=``.

    Embeddings (N, D) -> the mean over ``num_slices`` directions of the Epps–Pulley statistic; the step
    seeds the directions (the maximum over ranks) and advances by one per call.
    """

    def __init__(
        self, num_slices: int = 1024, t_max: float = 3.0, n_points: int = 17, *, backend: Optional[str] = None
    ):
        super().__init__()
        self.num_slices = as_int(num_slices, "num_slices", 1)
        check_backend(backend)
        self.backend = backend
        self.ep = EppsPulley(t_max=t_max, n_points=n_points)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, "x", False)
        a, _ = self.draw(x, self.num_slices, lejepa=True, dtype=torch.float32)
        stats = sliced_epps_pulley(
            _samples_first(x), directions=a, t_max=self.ep.t_max, n_points=self.ep.n_points, backend=self.backend
        )
        return stats.to(matmul_result_dtype(x, stats.dtype))

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}"


class LeJEPA:
    """The loss of stable-pretraining's ``LeJEPA`` method class, ``LeJEPA._compute_loss``.

    The method class itself (a timm backbone and projector) is not provided here: keep it from
    stable-pretraining and give it this module's ``SlicedEppsPulley`` as ``sigreg``.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "fused_sigreg.compat.stable_pretraining.LeJEPA provides only the static _compute_loss; build the model "
            "with stable_pretraining.methods.LeJEPA and set its .sigreg to this module's SlicedEppsPulley"
        )

    @staticmethod
    def _compute_loss(
        all_projected: Tensor, n_global: int, sigreg: torch.nn.Module, lamb: float
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """(inv + lamb * sigreg, inv, sigreg) for views (V, N, K): inv the mean square distance of every view
        to the mean of the first ``n_global``, sigreg on the views pooled into one (V * N, K) batch."""
        check_input(all_projected, "all_projected", False)
        if all_projected.dim() != 3:
            raise ValueError(f"all_projected must have shape (V, N, K), got {tuple(all_projected.shape)}")
        n_global = as_int(n_global, "n_global", 1)
        if n_global > all_projected.shape[0]:
            raise ValueError(f"n_global must be at most the view count {all_projected.shape[0]}, got {n_global}")
        check_number(lamb, "lamb")
        centers = all_projected[:n_global].mean(0)
        inv_loss = (centers - all_projected).square().mean()
        sigreg_loss = sigreg(all_projected.reshape(-1, all_projected.shape[-1]))
        return inv_loss + lamb * sigreg_loss, inv_loss, sigreg_loss
