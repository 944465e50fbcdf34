"""The ``eager`` backend: the reference itself, on any device and dtype (lowest priority)."""

from __future__ import annotations

from .. import reference, univariate
from ..dispatch import Backend, register_backend
from ..slicing import epps_pulley_quadrature


def _ecf_means(x, directions, t_max, n_points):
    t = epps_pulley_quadrature(t_max, n_points, device=x.device).t
    return reference.ecf_means(reference.project(x, directions), t)


def _sigreg_stats(x, directions, t_max, n_points, reduction=None):
    quad = epps_pulley_quadrature(t_max, n_points, device=x.device)
    cos_mean, sin_mean = reference.ecf_means(reference.project(x, directions), quad.t)
    stats = reference.epps_pulley_from_ecf(cos_mean, sin_mean, quad, x.shape[-2])
    return reference.reduce_statistics(stats, reduction)


EAGER = Backend(
    name="eager",
    priority=0,
    ops={
        "ecf_means": _ecf_means,
        "sigreg_stats": _sigreg_stats,
        "sliced_wasserstein": reference.sliced_wasserstein,
        "visreg": reference.visreg,
        "rdmreg": reference.rdmreg,
        "anderson_darling": univariate.anderson_darling,
        "cramer_von_mises": univariate.cramer_von_mises,
        "watson": univariate.watson,
        "shapiro_wilk": lambda x, expectation_mode, covariance_mode, eps: univariate.shapiro_wilk(
            x, expectation_mode, covariance_mode, eps
        ),
        "entropy": lambda x, m, eps, method: univariate.entropy(x, m, eps, method),
        "moments": univariate.moments,
        "vcreg": univariate.vcreg,
        "extended_jarque_bera": univariate.extended_jarque_bera,
        "nll": univariate.nll,
    },
)
register_backend(EAGER)
