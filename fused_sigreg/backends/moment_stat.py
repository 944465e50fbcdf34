"""lejepa's moment-family statistics over a fused moment-statistic op pair: forward reads each column once
(its power sums, then per column the statistic and its gradient as a polynomial in the values), backward
reads it once more (that polynomial times the incoming gradient at every row). Saved for backward: the
float32 samples and the polynomial's coefficients (eager keeps the samples too, and materialises every
power of them in its passes). Two op pairs, both in the (B, N, K) layout ``x @ W`` writes:
  - ``fused_sigreg::moment_stat`` / ``moment_stat_backward`` (compiled extension, ``csrc/moment_stat*``, CPU);
  - ``fused_sigreg::moment_stat_triton`` / ``moment_stat_backward_triton`` (``backends/triton/moment_stat.py``).
Both take the statistic ids of ``IDS`` (``csrc/moment_stat.h``, ``kernels/moment_stat.py``).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from .. import univariate
from ..dispatch import check_first_order
from ..distributed import is_distributed

IDS = {"moments": 0, "vcreg": 1, "extended_jarque_bera": 2}
MAX_ORDER = 16  # the highest moment the ops take (Moments' k_max); higher runs the reference

# forward: samples (B, N, K) float32, statistic id, k_max, closed -> (value (B, K) float32, coef (B, degree,
# K) float64, centre (B, K) float32); closed: whether the reference's clamp of the sd passes the gradient at
# its bound (univariate.CLAMP_CLOSED). backward: samples, coef, centre, grad_out (B, K) -> grad (B, N, K).
MomentOp = Callable[..., tuple]
MomentBackwardOp = Callable[..., torch.Tensor]


class MomentStatistic(torch.autograd.Function):
    """samples (..., N, K) float32 -> the statistic of each column (..., K), by ``forward_op`` / ``backward_op``."""

    @staticmethod
    def forward(ctx, samples, forward_op: MomentOp, backward_op: MomentBackwardOp, statistic: int, k_max: int):
        lead, (n, k) = samples.shape[:-2], samples.shape[-2:]
        flat = samples.reshape(-1, n, k)
        value, coef, centre = forward_op(flat, statistic, k_max, univariate.CLAMP_CLOSED)
        ctx.save_for_backward(flat, coef, centre)
        ctx.backward_op, ctx.shape = backward_op, samples.shape
        return value.reshape(*lead, k)

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the moment statistic")
        flat, coef, centre = ctx.saved_tensors
        go = grad_out.reshape(centre.shape).to(torch.float32)
        return ctx.backward_op(flat, coef, centre, go).reshape(ctx.shape), None, None, None, None


def make_stages(forward_op: MomentOp, backward_op: MomentBackwardOp) -> Dict[str, Callable]:
    """The dispatcher's moment stages over one op pair, with the eager references' signatures."""

    def run(samples, name: str, k_max: int = 4):
        return MomentStatistic.apply(samples.to(torch.float32), forward_op, backward_op, IDS[name], int(k_max))

    def moments(samples, k_max):
        # under torch.distributed the reference averages each moment over ranks (one all-reduce per moment);
        # the fused op finishes the statistic per rank, so it serves single processes only
        if is_distributed() or k_max > MAX_ORDER:
            return univariate.moments(samples, k_max)
        return run(samples, "moments", k_max)

    return {
        "moments": moments,
        "vcreg": lambda samples: run(samples, "vcreg"),
        "extended_jarque_bera": lambda samples: run(samples, "extended_jarque_bera"),
    }
