"""The ``eager`` backend: the reference itself, on any device and dtype (lowest priority)."""

from __future__ import annotations

from .. import reference
from ..dispatch import Backend, register_backend
from ..slicing import epps_pulley_quadrature


def _ecf_means(x, directions, t_max, n_points):
    t = epps_pulley_quadrature(t_max, n_points, device=x.device).t
    return reference.ecf_means(reference.project(x, directions), t)


EAGER = Backend(
    name="eager",
    priority=0,
    ops={
        "ecf_means": _ecf_means,
        "sliced_wasserstein": reference.sliced_wasserstein,
        "visreg": reference.visreg,
        "rdmreg": reference.rdmreg,
    },
)
register_backend(EAGER)
