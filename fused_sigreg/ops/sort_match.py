"""Sort-and-match through the compiled extension (``csrc/``): SWD, VISReg's shape term and RDMReg.

``fused_sigreg::sort_match`` sorts every slice once and returns, per slice, the sum of squared
residuals against the target and the gradient at the original rows, so backward is one multiply:
nothing but that (S, N) float32 gradient is kept (eager keeps sorted values and int64 indices).
Projections are laid out (S, N) = (V * K, N), one contiguous slice per row.
"""
from __future__ import annotations

import torch

from .. import reference


class QuantileMatchLoss(torch.autograd.Function):
    """mean over (S, N) of (sort(proj[s]) - target)^2; target (N,) sorted, or (S, N) sorted inside."""

    @staticmethod
    def forward(ctx, proj: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sum_sq, grad = torch.ops.fused_sigreg.sort_match(proj, target)
        ctx.save_for_backward(grad)
        return sum_sq.sum() / proj.numel()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * (grad_out / grad.numel()), None


def slices(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """x (..., N, D) -> float32 projections (S, N), S = prod(...) * K.

    The projection is the reference's own ``x @ W`` (bitwise the same numbers, so ranks and hence
    gradients agree with eager even at near-ties), then laid out one slice per row.
    """
    proj = reference.project(x, directions)  # (..., N, K)
    return proj.transpose(-1, -2).reshape(-1, x.shape[-2])


def sliced_wasserstein(x, directions, target):
    return QuantileMatchLoss.apply(slices(x, directions), target.to(torch.float32))


def visreg(z, directions, target, scale_weight=1.0, shape_weight=1.0, center_weight=1.0):
    center, scale, normalised = reference.visreg_terms(z)
    shape = sliced_wasserstein(normalised, directions, target)
    return scale_weight * scale + shape_weight * shape + center_weight * center


def rdmreg(z, directions, target_samples):
    target = slices(target_samples, directions).detach()
    return QuantileMatchLoss.apply(slices(z, directions), target)


STAGES = {"sliced_wasserstein": sliced_wasserstein, "visreg": visreg, "rdmreg": rdmreg}
