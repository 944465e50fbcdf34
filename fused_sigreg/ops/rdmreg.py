"""RDMReg (Rectified LpJEPA): two-sample sliced Wasserstein to a rectified generalized Gaussian."""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..distributed import all_gather_batch
from ..rgg import resolve_sigma, sample_rgg
from ..validation import as_int, check_lp_parameter, check_number, check_same_shape, compute_dtype
from .common import (
    StepCounter,
    autocast_off,
    check_backend,
    check_generator,
    check_input,
    finite_or_raise,
    flatten_views,
    resolve_directions,
)

DEFAULT_NUM_PROJECTIONS = 8192


@autocast_off
def rdmreg(
    z: torch.Tensor,
    num_projections: Optional[int] = None,
    directions: Optional[torch.Tensor] = None,
    target_samples: Optional[torch.Tensor] = None,
    p: float = 1.0,
    mu: float = 0.0,
    sigma=None,
    generator: Optional[torch.Generator] = None,
    gather: bool = False,
    backend: Optional[str] = None,
    check_finite: bool = False,
    projections: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """mean over (*, N, M) of (sort(z P^T) - sort(Y P^T))^2, Y ~ ReLU(GN_p(mu, sigma)) fresh per call.

    Args:
        z: (*, N, D) rectified features (the model ends in ReLU); leading indices are views sharing
            the projections, each with its own target samples. N >= 1 (N = 1 matches one sample to one).
        num_projections: M (default 8192, or the number of projections given).
        projections: explicit (M, D) unit projections, the official ``projection_vectors``; or
            ``directions`` (D, M), the same transposed. Exactly one layout may be given.
        target_samples: explicit target Y, same shape as (gathered) z, any float dtype (used in float32,
            float64 for float64 z); else drawn from the RGG (from ``generator``, or torch's global RNG).
        p, mu, sigma: target GN_p(mu, sigma); sigma a number, "sigma_GN" (default: unit variance before
            rectification) or "sigma_RGN" (unit variance after).
        generator: draws the directions (unless given) and then the target samples.
        gather: all-gather the batch over ranks first (with gradients).
    Returns: a float32 scalar (float64 for float64 z). Only z gets a gradient.
    """
    check_input(z, "z", check_finite)
    check_lp_parameter(p)
    check_number(mu, "mu")
    check_generator(generator, z.device)
    # generator also draws the target samples, so it may come together with explicit directions
    gen = generator if directions is None and projections is None else None
    w = resolve_directions(
        z, num_projections, DEFAULT_NUM_PROJECTIONS, directions, None, gen, "num_projections", check_finite, projections
    )
    z_dims = z.dim()
    z = flatten_views(z)
    if isinstance(target_samples, torch.Tensor) and target_samples.dim() == z_dims:
        target_samples = flatten_views(target_samples)
    if gather:
        z = all_gather_batch(z)
    if target_samples is None:
        sigma = resolve_sigma(p, mu, sigma)
        if generator is None:
            target_samples = sample_rgg(z.shape, p, mu, sigma, None, device=z.device)
        else:
            from . import outside_graph

            target_samples = outside_graph.sample_from(generator, z.shape, p, mu, sigma, z.device)
    else:
        check_same_shape(z, target_samples, "z", "target_samples")
        if check_finite:
            finite_or_raise(target_samples, "target_samples")
        # one precision for both sides on every backend: the target in z's compute dtype
        target_samples = target_samples.to(compute_dtype(z))
    return dispatch.run("rdmreg", (z, w, target_samples), backend, z, w, target_samples)


class RDMReg(StepCounter):
    """RDMReg with Rectified LpJEPA's defaults: 8192 projections, p = 1 (rectified Laplace), mu = 0, sigma_GN.

    Official config names: ``lp_norm_parameter`` = p, ``mean_shift_value`` = mu, ``mode_of_sigma`` = sigma.
    Projections and target samples are drawn from a generator seeded with ``global_step``
    (``StepCounter``), or from ``generator`` when one is passed; torch's global RNG is never touched.
    The official functions (same RNG use, same signatures) are ``fused_sigreg.compat.rectified_lpjepa``.
    """

    def __init__(
        self,
        num_projections: int = DEFAULT_NUM_PROJECTIONS,
        p: float = 1.0,
        mu: float = 0.0,
        sigma="sigma_GN",
        gather: bool = False,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.num_projections = as_int(num_projections, "num_projections", 1)
        check_lp_parameter(p)
        check_number(mu, "mu")
        check_backend(backend)
        self.p, self.mu = p, mu
        self.sigma = resolve_sigma(p, mu, sigma)
        self.gather, self.backend = gather, backend

    def forward(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        check_input(z, "z", False)
        # the generator that drew the projections then draws the target samples, as in the official code
        directions, gen = self.draw(z, self.num_projections, generator)
        return rdmreg(
            z,
            directions=directions,
            p=self.p,
            mu=self.mu,
            sigma=self.sigma,
            generator=gen,
            gather=self.gather,
            backend=self.backend,
        )
