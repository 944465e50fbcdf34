"""lejepa's NLL (``univariate.nll``) over a fused sort-NLL op: one sort per slice, each rank's loss and slope,
the losses written in lejepa's order (output i holds the loss of rank o[i], o the sort permutation: the
reference's ``gather`` by o). Output i depends on the one input row o[o[i]], so backward is a multiply and
a gather with what forward saved (eager keeps the sorted values, int64 indices and every elementwise
intermediate). Two ops, each in its own layout (as ``sort_match.py``): ``fused_sigreg::sort_nll`` (compiled
extension, ``csrc/sort_nll_cpu.cpp``, CPU), (S, N) slices as rows; ``fused_sigreg::sort_nll_triton``
(``backends/triton/order_nll.py``, N <= 1024), (V, N, K).

Only the sorting form is fused: ``rank=`` (the input is that one order statistic) is elementwise and runs
the reference, as does an ``n`` other than the sample count (which the reference cannot broadcast).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from .. import univariate
from ..dispatch import check_first_order
from ..slicing import _cached, _device_key

# (samples (..., N, K) float32, constant (N,), cutoffs (2, N) or None, closed) -> (loss, slope, source),
# each (..., N, K); source int64: the output each input row feeds
NllOp = Callable[..., tuple]


class OrderNll(torch.autograd.Function):
    """samples (..., N, K) float32 -> lejepa's per-sample NLL (..., N, K), by ``nll_op``."""

    @staticmethod
    def forward(ctx, samples, nll_op: NllOp, constant, cutoffs):
        loss, slope, source = nll_op(samples, constant, cutoffs, univariate.CLAMP_CLOSED)
        ctx.save_for_backward(slope, source)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the order-statistic NLL")
        slope, source = ctx.saved_tensors
        return (grad_out * slope).gather(-2, source), None, None, None


def rank_constants(n: int, device) -> torch.Tensor:
    """Each rank's log multinomial constant, (n,) float32: the reference's own values (its float32
    accumulation), built once per (n, device)."""
    key = ("nll_constants", int(n), _device_key(device))
    return _cached(key, lambda: univariate._order_constants(int(n), None, device)[2].reshape(-1).contiguous())


def rank_cutoffs(n: int, alpha: float, device) -> torch.Tensor:
    """(2, n) float32: each rank's central interval holding 1 - 2 alpha (the reference's), built once per
    (n, alpha, device): the reference integrates n densities on 1000 points each call."""
    key = ("nll_cutoffs", int(n), float(alpha), _device_key(device))
    return _cached(key, lambda: univariate._nll_cutoffs(int(n), alpha, None, device).reshape(2, -1).contiguous())


def make_stage(nll_op: NllOp) -> Dict[str, Callable]:
    """The dispatcher's ``nll`` stage over one sort-NLL op, with the eager reference's signature."""

    def nll(samples, alpha=0.5, rank=None, n=None):
        n_samples = samples.shape[-2]
        if rank is not None or (n is not None and int(n) != n_samples):
            return univariate.nll(samples, alpha, rank, n)
        cutoffs = rank_cutoffs(n_samples, alpha, samples.device) if alpha < 0.5 else None
        constant = rank_constants(n_samples, samples.device)
        return OrderNll.apply(samples.to(torch.float32), nll_op, constant, cutoffs)

    return {"nll": nll}
