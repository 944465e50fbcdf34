"""Eager PyTorch reference of every statistic: the ground truth all backends are tested against.

Each function mirrors the official implementation's arithmetic (docs/design.md §3) on already
validated arguments; the public API in ``fused_sigreg.ops`` does the checking, direction
sampling and dispatch. Never edit this file to agree with a kernel.

Shapes: x / z is (..., N, D) with an optional leading view dim V; directions are (D, K);
statistics accumulate in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .distributed import all_reduce_mean, world_size
from .slicing import Quadrature, epps_pulley_quadrature
from .validation import compute_dtype

VISREG_STD_EPS = 1e-6


def project(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(..., N, D) @ (D, K) -> (..., N, K) in the compute dtype."""
    cdt = compute_dtype(x)
    return x.to(cdt) @ directions.to(cdt)


# ----------------------------------------------------------------------------- SIGReg (LeJEPA)


def ecf_means(proj: torch.Tensor, t: torch.Tensor):
    """Empirical characteristic function of each slice at the knots.

    proj (..., N, K), t (T,) -> (cos_mean, sin_mean), each (..., K, T): mean_n cos/sin(t_j p_nk).
    Materialises the (..., N, K, T) argument, as lejepa does.
    """
    arg = proj.unsqueeze(-1) * t.to(proj.dtype)
    return torch.cos(arg).mean(dim=-3), torch.sin(arg).mean(dim=-3)


def epps_pulley_from_ecf(
    cos_mean: torch.Tensor, sin_mean: torch.Tensor, quad: Quadrature, n_total: int
) -> torch.Tensor:
    """T_k = n_total * sum_j w_j [(C_kj - phi_j)^2 + S_kj^2], (..., K, T) -> (..., K)."""
    phi = quad.phi.to(cos_mean)
    err = (cos_mean - phi).square() + sin_mean.square()
    return (err @ quad.weights.to(err)) * n_total


def epps_pulley(proj: torch.Tensor, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    """lejepa's ``EppsPulley`` on projections (..., N, K) -> statistic per slice (..., K).

    Under torch.distributed the ECF means are averaged over ranks (differentiably) and the
    statistic is scaled by the global batch N_local * world_size.
    """
    quad = epps_pulley_quadrature(t_max, n_points, device=proj.device)
    cos_mean, sin_mean = ecf_means(proj, quad.t)
    cos_mean, sin_mean = all_reduce_mean(cos_mean), all_reduce_mean(sin_mean)
    return epps_pulley_from_ecf(cos_mean, sin_mean, quad, proj.shape[-2] * world_size())


def clip_statistics(stats: torch.Tensor, clip_value: Optional[float]) -> torch.Tensor:
    """lejepa's ``clip_value``: statistics below the threshold count as 0."""
    if clip_value is None:
        return stats
    return torch.where(stats < clip_value, torch.zeros_like(stats), stats)


def reduce_statistics(stats: torch.Tensor, reduction: Optional[str]) -> torch.Tensor:
    if reduction == "mean":
        return stats.mean()
    if reduction == "sum":
        return stats.sum()
    return stats


def sliced_epps_pulley(
    x: torch.Tensor,
    directions: torch.Tensor,
    t_max: float = 3.0,
    n_points: int = 17,
    reduction: Optional[str] = "mean",
    clip_value: Optional[float] = None,
) -> torch.Tensor:
    """SIGReg: lejepa's ``SlicingUnivariateTest(EppsPulley)`` with the given directions.

    x (N, D) or (V, N, D); directions (D, K). Returns a scalar, or (K,) / (V, K) for reduction=None.
    """
    stats = epps_pulley(project(x, directions), t_max, n_points)
    return reduce_statistics(clip_statistics(stats, clip_value), reduction)


# ------------------------------------------------------------------ sliced Wasserstein (VISReg)


def sliced_wasserstein(x: torch.Tensor, directions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over (..., N, K) of (sort_N(x @ directions) - target)^2; target (N,) sorted quantiles."""
    proj = project(x, directions)
    ordered = proj.sort(dim=-2).values
    return (ordered - target.to(proj.dtype).unsqueeze(-1)).square().mean()


def visreg_terms(z: torch.Tensor):
    """VISReg's centre and scale losses and the normalised embeddings its shape term slices.

    mu = mean_N z, L_center = mean mu^2; sigma = ||z - mu||_2 / sqrt(N) + 1e-6 (per view and dim),
    L_scale = mean (sigma - 1)^2; normalised = (z - mu) / stopgrad(sigma).
    """
    z = z.to(compute_dtype(z))
    n = z.shape[-2]
    mu = z.mean(dim=-2, keepdim=True)
    center = mu.square().mean()
    centered = z - mu
    std = centered.norm(dim=-2) / math.sqrt(n) + VISREG_STD_EPS
    scale = (std - 1.0).square().mean()
    return center, scale, centered / std.detach().unsqueeze(-2)


def visreg(
    z: torch.Tensor,
    directions: torch.Tensor,
    target: torch.Tensor,
    scale_weight: float = 1.0,
    shape_weight: float = 1.0,
    center_weight: float = 1.0,
) -> torch.Tensor:
    """VISReg: centre + scale + shape terms on z (N, D) or (V, N, D) -> scalar.

    L = scale_weight * L_scale + shape_weight * SWD(normalised) + center_weight * L_center, the
    terms as in ``visreg_terms``, the shape term against the N(0,1) quantile target.
    """
    center, scale, normalised = visreg_terms(z)
    shape = sliced_wasserstein(normalised, directions, target)
    return scale_weight * scale + shape_weight * shape + center_weight * center


# ------------------------------------------------------------------ RDMReg (Rectified LpJEPA)


def rdmreg(z: torch.Tensor, directions: torch.Tensor, target_samples: torch.Tensor) -> torch.Tensor:
    """Two-sample sliced Wasserstein: mean over (views, N, M) of (sort(z W) - sort(Y W))^2.

    z, target_samples (N, D) or (V, N, D); directions W (D, M) with unit columns (the official
    ``projections`` (M, D) transposed). Equal view sizes make the overall mean equal to the mean
    over views of each view's loss.
    """
    proj_z = project(z, directions).sort(dim=-2).values
    proj_y = project(target_samples, directions).to(proj_z.dtype).sort(dim=-2).values
    return (proj_z - proj_y).square().mean()
