"""lejepa's EDF-family statistics on the extension's ``fused_sigreg::sort_stat`` (CPU): one sort per
slice, the statistic and its gradient in rank order, the gradient written at the original rows.

Backward is one multiply of that saved float32 gradient (eager keeps the sorted values, their int64
indices and every elementwise intermediate of the statistic)."""

from __future__ import annotations

import torch

from ... import univariate
from ...dispatch import check_first_order
from ...univariate import shapiro_wilk_weights
from ..sort_match import slice_rows

# The op's statistic ids (csrc/sort_stat.h, SortStatistic)
IDS = {
    "cramer_von_mises": 0,
    "watson": 1,
    "anderson_darling": 2,
    "shapiro_wilk": 3,
    "entropy:centered": 4,
    "entropy:right": 5,
}


class SortStatistic(torch.autograd.Function):
    """samples (..., N, K) float32 -> the statistic of each column (..., K)."""

    @staticmethod
    def forward(ctx, samples, statistic: int, eps: float, m: int, weights):
        value, grad = torch.ops.fused_sigreg.sort_stat(slice_rows(samples), statistic, eps, m, weights)
        ctx.save_for_backward(grad)
        return value.reshape(samples.shape[:-2] + samples.shape[-1:])

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the sorted statistic")
        (grad,) = ctx.saved_tensors
        per_slice = grad.reshape(grad_out.shape + grad.shape[-1:]) * grad_out.unsqueeze(-1)  # (..., K, N)
        return per_slice.transpose(-1, -2), None, None, None, None


def _run(samples, name: str, eps: float = 1e-5, m: int = 1, weights=None):
    return SortStatistic.apply(samples.to(torch.float32), IDS[name], float(eps), int(m), weights)


def anderson_darling(samples):
    return _run(samples, "anderson_darling")


def cramer_von_mises(samples):
    return _run(samples, "cramer_von_mises")


def watson(samples):
    return _run(samples, "watson")


def shapiro_wilk(samples, expectation_mode, covariance_mode, eps):
    weights = shapiro_wilk_weights(samples.shape[-2], expectation_mode, covariance_mode, samples.device)
    return _run(samples, "shapiro_wilk", eps, weights=weights)


def entropy(samples, m, eps, method):
    # below 2m + 2 (m + 2) samples the reference's end spacings overlap or vanish: it is its own definition there
    if samples.shape[-2] < (2 * m + 2 if method == "centered" else m + 2):
        return univariate.entropy(samples, m, eps, method)
    return _run(samples, f"entropy:{method}", eps, m)


STAGES = {
    "anderson_darling": anderson_darling,
    "cramer_von_mises": cramer_von_mises,
    "watson": watson,
    "shapiro_wilk": shapiro_wilk,
    "entropy": entropy,
}
