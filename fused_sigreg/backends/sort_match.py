"""Sort-and-match stages (SWD, VISReg's shape term, RDMReg) over a fused sort-and-match op.

A match op takes projections and a target and returns, per slice, the sum of squared residuals
between the sorted projections and the target, and the gradient of that sum at the original rows.
Backward is then one multiply: nothing but that float32 gradient is kept (eager keeps sorted values
and int64 indices). Two ops exist, each with its own layout of the projections:
  - ``fused_sigreg::sort_match`` (compiled extension, ``backends/extension/sort_match.py``, CPU and CUDA):
    (S, N) = (V * K, N), one contiguous slice per row;
  - ``fused_sigreg::sort_match_triton`` (``backends/triton/sort_match.py``): (V, N, K), as ``x @ W`` writes it.
Projections are always the reference's own ``x @ W`` (bitwise the same numbers, so the ranks and
hence the gradients agree with eager even at near-ties).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from .. import reference
from ..dispatch import check_first_order

MatchOp = Callable[[torch.Tensor, torch.Tensor], tuple]


class QuantileMatchLoss(torch.autograd.Function):
    """mean of (sorted proj - target)^2 by ``match`` (a match op); target sorted quantiles or samples."""

    @staticmethod
    def forward(ctx, proj: torch.Tensor, target: torch.Tensor, match: MatchOp) -> torch.Tensor:
        sum_sq, grad = match(proj, target)
        ctx.save_for_backward(grad)
        return sum_sq.sum() / proj.numel()

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the sort-and-match loss")
        (grad,) = ctx.saved_tensors
        return grad * (grad_out / grad.numel()), None, None


def slice_rows(proj: torch.Tensor) -> torch.Tensor:
    """(..., N, K) -> (S, N), S = prod(...) * K: the extension's layout (a copy)."""
    return proj.transpose(-1, -2).reshape(-1, proj.shape[-2])


def view_columns(proj: torch.Tensor) -> torch.Tensor:
    """(..., N, K) -> (V, N, K): the Triton kernel's layout (no copy for a matmul output)."""
    return proj.reshape(-1, *proj.shape[-2:]).contiguous()


def make_stages(match: MatchOp, layout: Callable[[torch.Tensor], torch.Tensor]) -> Dict[str, Callable]:
    """The dispatcher's ``sliced_wasserstein``, ``visreg`` and ``rdmreg`` stages over one match op,
    with the eager reference's signatures."""

    def project(x, directions):
        return layout(reference.project(x, directions))

    def sliced_wasserstein(x, directions, target):
        return QuantileMatchLoss.apply(project(x, directions), target.to(torch.float32), match)

    def visreg(z, directions, target, scale_weight=1.0, shape_weight=1.0, center_weight=1.0):
        center, scale, normalised = reference.visreg_terms(z)
        shape = sliced_wasserstein(normalised, directions, target)
        return scale_weight * scale + shape_weight * shape + center_weight * center

    def rdmreg(z, directions, target_samples):
        target = project(target_samples, directions).detach()
        return QuantileMatchLoss.apply(project(z, directions), target, match)

    return {"sliced_wasserstein": sliced_wasserstein, "visreg": visreg, "rdmreg": rdmreg}
