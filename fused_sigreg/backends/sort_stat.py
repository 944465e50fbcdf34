"""lejepa's EDF-family statistics over a fused sort-statistic op: one sort per slice, the statistic and its
gradient formed in rank order, the gradient written at the original rows. Backward is then one multiply
of that saved float32 gradient (eager keeps the sorted values, their int64 indices and every
elementwise intermediate of the statistic). Two ops, each in its own layout (as ``sort_match.py``):
  - ``fused_sigreg::sort_stat`` (compiled extension, ``csrc/sort_stat*``, CPU): (S, N) slices as rows;
  - ``fused_sigreg::sort_stat_triton`` (``backends/triton/sort_stat.py``): (V, N, K), as ``x @ W`` writes it.
Both take the statistic ids of ``IDS`` (``csrc/sort_stat.h``, ``kernels/sort_stat.py``).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from .. import univariate
from ..dispatch import check_first_order
from ..univariate import shapiro_wilk_weights

IDS = {
    "cramer_von_mises": 0,
    "watson": 1,
    "anderson_darling": 2,
    "shapiro_wilk": 3,
    "entropy:centered": 4,
    "entropy:right": 5,
}

# samples (..., N, K) float32, statistic id, eps, m, weights, closed -> (value (..., K), grad (..., N, K));
# closed: whether the references' clamps pass the gradient at their bounds (univariate.CLAMP_CLOSED)
StatOp = Callable[..., tuple]


class SortStatistic(torch.autograd.Function):
    """samples (..., N, K) float32 -> the statistic of each column (..., K), by ``stat_op``."""

    @staticmethod
    def forward(ctx, samples, stat_op: StatOp, statistic: int, eps: float, m: int, weights):
        value, grad = stat_op(samples, statistic, eps, m, weights, univariate.CLAMP_CLOSED)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the sorted statistic")
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(-2), None, None, None, None, None


def make_stages(stat_op: StatOp) -> Dict[str, Callable]:
    """The dispatcher's statistic stages over one sort-statistic op, with the eager references' signatures."""

    def run(samples, name: str, eps: float = 1e-5, m: int = 1, weights=None):
        return SortStatistic.apply(samples.to(torch.float32), stat_op, IDS[name], float(eps), int(m), weights)

    def shapiro_wilk(samples, expectation_mode, covariance_mode, eps):
        weights = shapiro_wilk_weights(samples.shape[-2], expectation_mode, covariance_mode, samples.device)
        return run(samples, "shapiro_wilk", eps, weights=weights)

    def entropy(samples, m, eps, method):
        # below 2m + 2 (m + 2) samples the reference's end spacings overlap or vanish: it is its own definition
        if samples.shape[-2] < (2 * m + 2 if method == "centered" else m + 2):
            return univariate.entropy(samples, m, eps, method)
        return run(samples, f"entropy:{method}", eps, m)

    return {
        "anderson_darling": lambda samples: run(samples, "anderson_darling"),
        "cramer_von_mises": lambda samples: run(samples, "cramer_von_mises"),
        "watson": lambda samples: run(samples, "watson"),
        "shapiro_wilk": shapiro_wilk,
        "entropy": entropy,
    }
