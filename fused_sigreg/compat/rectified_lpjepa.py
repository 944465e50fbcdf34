"""Rectified LpJEPA's loss functions (YilunKuang/rectified-lp-jepa, ``solo/losses/rectified_lpjepa.py``),
computed by fused_sigreg.

``from fused_sigreg.compat.rectified_lpjepa import rectified_lp_jepa_loss`` (or ``rdmreg_loss``,
``sliced_wasserstein_distance_for_one_view``) replaces the official import: same arguments and
defaults, ``projection_vectors`` (M, D) or a list of two (one per view), both ``target_dist`` kinds,
the 3-tuple return, and target samples drawn with exactly the official calls on torch's global RNG.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..distributed import all_gather_batch
from ..ops.common import check_input
from ..ops.rdmreg import rdmreg
from ..rgg import gn_unit_variance_sigma, rgn_unit_variance_sigma
from ..validation import _describe, as_int, check_lp_parameter, check_number, check_same_shape
from .rule import matmul_result_dtype

__all__ = [
    "choose_sigma_for_unit_var",
    "determine_sigma_for_lp_dist",
    "rdmreg_loss",
    "rectified_lp_jepa_loss",
    "sample_lp_distribution",
    "sliced_wasserstein_distance_for_one_view",
]

TARGETS = ("rectified_lp_distribution", "lp_distribution")
Projections = Union[torch.Tensor, Sequence[torch.Tensor]]


def determine_sigma_for_lp_dist(p: float) -> float:
    """The official helper: sigma for which GN_p(0, sigma) has unit variance (sigma_GN, closed form)."""
    return gn_unit_variance_sigma(p)


def choose_sigma_for_unit_var(p: float, mu: float, target_var: float = 1.0, rtol: float = 1e-10, max_iter: int = 2000):
    """The official helper: sigma > 0 for which Var(ReLU(X)) = target_var, X ~ GN_p(mu, sigma) (sigma_RGN).

    Solved in float64 with closed-form moments (``fused_sigreg.rgn_unit_variance_sigma``), to float64
    precision: within the official bisection's tolerance (``rtol`` on the variance, which it computes
    with mpmath); ``rtol`` and ``max_iter`` are checked and otherwise have nothing left to bound."""
    check_number(rtol, "rtol", 0.0, low_open=True)
    as_int(max_iter, "max_iter", 1)
    return rgn_unit_variance_sigma(p, mu, target_var)


def sample_lp_distribution(shape, p, loc=0.0, scale=1.0, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Samples of the generalized Gaussian GN_p(loc, scale), density ~ exp(-|x - loc|^p / (p scale^p)).

    Drawn with the official calls on torch's global RNG: p = 1 ``Laplace(loc, scale)``, p = 2
    ``loc + scale * randn``, otherwise a random sign times (p G)^(1/p), G ~ Gamma(1/p, 1) (sampled on
    the CPU), so a seeded run draws the official numbers.
    """
    if p == 1.0:
        laplace = torch.distributions.Laplace(
            torch.tensor(loc, device=device, dtype=dtype), torch.tensor(scale, device=device, dtype=dtype)
        )
        return laplace.sample(shape)
    if p == 2.0:
        return loc + scale * torch.randn(shape, device=device, dtype=dtype)
    sign = torch.empty(shape, device=device, dtype=dtype).bernoulli_(0.5) * 2 - 1
    magnitude = torch.distributions.Gamma(concentration=1.0 / p, rate=1.0).sample(shape).to(device=device, dtype=dtype)
    return loc + scale * (sign * (p * magnitude).pow(1.0 / p))


def _target_samples(features, target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma) -> torch.Tensor:
    # the module-level name is looked up at call time, so a test may substitute fixed samples
    y = sample_lp_distribution(
        tuple(features.shape),
        p=lp_norm_parameter,
        loc=mean_shift_value,
        scale=chosen_sigma,
        device=features.device,
        dtype=features.dtype,
    )
    return torch.relu(y) if target_dist == "rectified_lp_distribution" else y


def _check_common(target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma) -> None:
    if target_dist not in TARGETS:
        raise ValueError(f"target_dist must be one of {TARGETS}, got {target_dist!r}")
    check_number(mean_shift_value, "mean_shift_value")
    check_lp_parameter(lp_norm_parameter)
    if chosen_sigma is None:
        raise ValueError(
            "chosen_sigma must be given, as the official code requires: e.g. "
            "fused_sigreg.gn_unit_variance_sigma(lp_norm_parameter) (sigma_GN) or "
            "fused_sigreg.rgn_unit_variance_sigma(lp_norm_parameter, mean_shift_value) (sigma_RGN)"
        )
    check_number(chosen_sigma, "chosen_sigma", 0.0, low_open=True)


def _check_one_view(features, projection_vectors, name="features") -> None:
    check_input(features, name, False)
    if features.dim() != 2:
        raise ValueError(f"{name} must be (B, D), got {_describe(features)}")
    if not isinstance(projection_vectors, torch.Tensor):
        raise TypeError(f"projection_vectors must be a torch.Tensor (M, D), got {type(projection_vectors).__name__}")


def _official_dtype(features: torch.Tensor, projection_vectors: torch.Tensor) -> torch.dtype:
    # the official loss is computed in the dtype of features @ projection_vectors.T: the autocast dtype
    # under autocast (its sort, difference and mean keep it), else the promoted input dtype
    return matmul_result_dtype(features, torch.promote_types(features.dtype, projection_vectors.dtype))


def sliced_wasserstein_distance_for_one_view(
    features: torch.Tensor,
    projection_vectors: torch.Tensor,
    target_dist: str,
    mean_shift_value: float = 0.0,
    lp_norm_parameter: float = 1.0,
    chosen_sigma: Optional[float] = None,
    *,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """mean over (B, M) of (sort(features P^T) - sort(Y P^T))^2, Y ~ [ReLU] GN_p(mean_shift_value, chosen_sigma).

    features (B, D); projection_vectors P (M, D). Returns a scalar in the dtype of features @ P^T.
    """
    _check_common(target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma)
    _check_one_view(features, projection_vectors)
    y = _target_samples(features, target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma)
    out = rdmreg(features, projections=projection_vectors, target_samples=y, backend=backend)
    return out.to(_official_dtype(features, projection_vectors))


def rdmreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    projection_vectors: Projections,
    target_dist: str,
    mean_shift_value: float = 0.0,
    lp_norm_parameter: float = 1.0,
    chosen_sigma: Optional[float] = None,
    *,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """(RDMReg(z1) + RDMReg(z2)) / 2 with one (M, D) projection matrix for both views, or a list of two.

    Targets are drawn for z1, then for z2, as the official code draws them. With shared projections
    and equal batches both views go to the backend in one call.
    """
    _check_common(target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma)
    if isinstance(projection_vectors, (list, tuple)):
        if len(projection_vectors) != 2:
            raise ValueError(
                f"projection_vectors as a list must hold 2 matrices (one per view), got {len(projection_vectors)}"
            )
        per_view = list(projection_vectors)
    elif isinstance(projection_vectors, torch.Tensor):
        per_view = [projection_vectors, projection_vectors]
    else:
        raise TypeError(
            "projection_vectors must be a torch.Tensor (M, D) or a list of two, "
            f"got {type(projection_vectors).__name__}"
        )
    for name, z, p in (("z1", z1, per_view[0]), ("z2", z2, per_view[1])):
        _check_one_view(z, p, name)
    args = (target_dist, mean_shift_value, lp_norm_parameter, chosen_sigma)
    y1, y2 = _target_samples(z1, *args), _target_samples(z2, *args)
    dtype = torch.promote_types(_official_dtype(z1, per_view[0]), _official_dtype(z2, per_view[1]))
    if per_view[0] is per_view[1] and z1.shape == z2.shape and z1.dtype == z2.dtype:
        z, y = torch.stack((z1, z2)), torch.stack((y1, y2))
        return rdmreg(z, projections=per_view[0], target_samples=y, backend=backend).to(dtype)
    losses = [
        rdmreg(z, projections=p, target_samples=y, backend=backend)
        for z, p, y in ((z1, per_view[0], y1), (z2, per_view[1], y2))
    ]
    return ((losses[0] + losses[1]) / 2).to(dtype)


def rectified_lp_jepa_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    projection_vectors: Projections,
    target_distribution: str,
    invariance_loss_weight: float,
    rdm_reg_loss_weight: float,
    mean_shift_value: float = 0.0,
    lp_norm_parameter: float = 1.0,
    chosen_sigma: Optional[float] = None,
    *,
    backend: Optional[str] = None,
):
    """Returns (loss, sim_loss, reg_loss): sim_loss = mse(z1, z2) on this rank's batch, reg_loss =
    ``rdmreg_loss`` of both views all-gathered over ranks (with gradients), loss =
    invariance_loss_weight * sim_loss + rdm_reg_loss_weight * reg_loss."""
    check_number(invariance_loss_weight, "invariance_loss_weight")
    check_number(rdm_reg_loss_weight, "rdm_reg_loss_weight")
    check_input(z1, "z1", False)
    check_same_shape(z1, z2, "z1", "z2")
    sim_loss = F.mse_loss(z1, z2)
    reg_loss = rdmreg_loss(
        all_gather_batch(z1),
        all_gather_batch(z2),
        projection_vectors,
        target_distribution,
        mean_shift_value,
        lp_norm_parameter,
        chosen_sigma,
        backend=backend,
    )
    loss = invariance_loss_weight * sim_loss + rdm_reg_loss_weight * reg_loss
    return loss, sim_loss, reg_loss
