"""lejepa's moment-family statistics over a fused moment-statistic op: per column, the power sums of
the centred values in one read, the statistic, and its gradient (a polynomial in the values) written
in one more. Backward is one multiply of that saved float32 gradient (eager keeps every power of the
samples and the intermediates of each moment). Two ops, both in the (B, N, K) layout ``x @ W`` writes:
  - ``fused_sigreg::moment_stat`` (compiled extension, ``csrc/moment_stat*``, CPU);
  - ``fused_sigreg::moment_stat_triton`` (``backends/triton/moment_stat.py``).
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

# samples (B, N, K) float32, statistic id, k_max, closed -> (value (B, K), grad (B, N, K));
# closed: whether the reference's clamp of the sd passes the gradient at its bound (univariate.CLAMP_CLOSED)
MomentOp = Callable[..., tuple]


class MomentStatistic(torch.autograd.Function):
    """samples (..., N, K) float32 -> the statistic of each column (..., K), by ``moment_op``."""

    @staticmethod
    def forward(ctx, samples, moment_op: MomentOp, statistic: int, k_max: int):
        lead, (n, k) = samples.shape[:-2], samples.shape[-2:]
        value, grad = moment_op(samples.reshape(-1, n, k), statistic, k_max, univariate.CLAMP_CLOSED)
        ctx.save_for_backward(grad)
        ctx.shape = samples.shape
        return value.reshape(*lead, k)

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the moment statistic")
        (grad,) = ctx.saved_tensors
        return grad.reshape(ctx.shape) * grad_out.unsqueeze(-2), None, None, None


def make_stages(moment_op: MomentOp) -> Dict[str, Callable]:
    """The dispatcher's moment stages over one moment-statistic op, with the eager references' signatures."""

    def run(samples, name: str, k_max: int = 4):
        return MomentStatistic.apply(samples.to(torch.float32), moment_op, IDS[name], int(k_max))

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
