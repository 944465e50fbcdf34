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

VISReg adds a terms op pair (``fused_sigreg::visreg_terms`` / ``visreg_terms_backward`` on CPU,
``visreg_terms_triton`` / ``visreg_terms_backward_triton`` on CUDA): one op forms the centre and scale terms
and the normalised embeddings, one op turns the shape term's gradient into z's, so that VISReg is one
autograd op of a few launches instead of ~35 eager ones around the match. The normalised values are the
reference's to the rounding of the mean and the norm (summed in another order).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from .. import reference
from ..dispatch import check_first_order
from .ecf_passes import grads_batched

MatchOp = Callable[[torch.Tensor, torch.Tensor], tuple]
# (forward, backward, centring): the contract of the extension's visreg_terms / visreg_terms_backward /
# center_norm (csrc/ops.cpp)
TermsOps = Tuple[Callable[..., tuple], Callable[..., torch.Tensor], Callable[..., tuple]]


def center_norm(z: torch.Tensor, mu: torch.Tensor) -> tuple:
    """The reference's centring of z (V, N, D) by its mean mu (V, 1, D): (z - mu, its norm over N)."""
    centered = z - mu
    return centered, centered.norm(dim=-2)


class QuantileMatchLoss(torch.autograd.Function):
    """mean over (V, N, K) of (sorted x @ W - target)^2 by ``match`` (a match op) on x (V, N, D) float32;
    target sorted quantiles or the target samples' projections. Forward: the reference's own x @ W, the
    match op, its sum. Backward: the saved gradient back through grad_out W in one batched matmul that also
    applies 1 / (V N K) and reads the match op's layout as it is (no transposed copy, no scaling pass)."""

    @staticmethod
    def forward(ctx, x, directions, target, match: MatchOp, layout) -> torch.Tensor:
        proj = reference.project(x, directions)
        sum_sq, grad = match(layout.to(proj), target)
        ctx.save_for_backward(grad, directions)
        ctx.layout, ctx.proj_shape = layout, proj.shape
        return sum_sq.sum() / proj.numel()

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the sort-and-match loss")
        grad, directions = ctx.saved_tensors
        grad_proj = ctx.layout.back(grad, ctx.proj_shape)
        return back_project(grad_proj, directions, grad_out, 1.0 / grad.numel()), None, None, None, None


class ProjectedMatchLoss(torch.autograd.Function):
    """QuantileMatchLoss on a pair of ops that each do a whole direction in one call (the extension's
    ``sort_match_loss`` / ``sort_match_loss_backward``, ``csrc/sort_match_loss.cpp``): the same aten calls
    in the same order, so the same numbers, with the per-op host cost of ~10 of them saved."""

    @staticmethod
    def forward(ctx, x, directions, target, ops) -> torch.Tensor:
        loss, grad = ops[0](x, directions, target)
        ctx.save_for_backward(grad, directions)
        ctx.backward_op = ops[1]
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("the sort-and-match loss")
        grad, directions = ctx.saved_tensors
        return ctx.backward_op(grad, directions, grad_out, 1.0 / grad.numel()), None, None, None


def back_project(
    grad_proj: torch.Tensor, directions: torch.Tensor, grad_out: torch.Tensor, scale: float = 1.0, host: bool = False
):
    """scale * grad_out * grad_proj @ W^T for grad_proj (V, N, K) in any strides (a transposed layout is
    read as it is): one batched matmul, W^T broadcast over the views, and grad_out multiplied into the
    smaller of the (V, N, K) gradient and the (K, D) matrix (one small pass instead of a full one).
    ``host``: the host's BLAS instead, whose baddbmm applies alpha in a pass of its own: the GEMM on the
    gradient as laid out, then one in-place scale of its output (csrc/sort_match_loss.cpp does the same)."""
    V, N, K = grad_proj.shape
    w = directions.to(grad_proj.dtype).t()
    if host:
        out = torch.bmm(grad_proj, w.expand(V, K, w.shape[1]))
        factor = grad_out if scale == 1.0 else grad_out * scale
        if not torch.compiler.is_compiling() and grads_batched(grad_out):
            return out * factor  # a vmapped backward (is_grads_batched) batches grad_out, not out: no in-place
        return out.mul_(factor)
    if w.numel() <= grad_proj.numel():
        w = w * grad_out
    else:
        grad_proj = grad_proj * grad_out
    w = w.expand(V, K, w.shape[1])
    if scale == 1.0:
        return torch.bmm(grad_proj, w)
    # beta = 0: the input only gives the shape (a view of grad_proj's own values, so that even a path that
    # multiplied it by 0 would add nothing that grad_proj does not already carry)
    return torch.baddbmm(grad_proj[:, :, :1].expand(V, N, w.shape[2]), grad_proj, w, beta=0.0, alpha=scale)


class VisregLoss(torch.autograd.Function):
    """VISReg of z (V, N, D) float32: the reference's mean and norm, the terms op (centre and scale terms,
    normalised z), its projection onto the directions and the match op; forward returns terms +
    shape_weight * mean squared residual. Backward: the match's saved gradient back through grad_out W
    (one batched matmul) and the terms' backward op."""

    @staticmethod
    def forward(ctx, z, directions, target, weights, match: MatchOp, layout, terms: TermsOps, host: bool):
        scale_weight, shape_weight, center_weight = weights
        # the reference's reductions, bit for bit: their roundings decide the normalised values and the ranks
        mu = z.mean(dim=-2, keepdim=True)
        centered, norm = terms[2](z, mu)
        normalised, value, sigma = terms[0](centered, mu, norm, reference.VISREG_STD_EPS, scale_weight, center_weight)
        proj = reference.project(normalised, directions)
        sum_sq, grad = match(layout.to(proj), target)
        ctx.save_for_backward(centered, mu, sigma, norm, grad, directions)
        ctx.weights, ctx.layout, ctx.terms_backward, ctx.proj_shape = weights, layout, terms[1], proj.shape
        ctx.host = host
        ctx.shape_factor = shape_weight / proj.numel()
        return torch.add(value, sum_sq.sum(), alpha=ctx.shape_factor)

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("VISReg")
        centered, mu, sigma, norm, grad, directions = ctx.saved_tensors
        grad_normalised = back_project(ctx.layout.back(grad, ctx.proj_shape), directions, grad_out, host=ctx.host)
        scale_weight, _, center_weight = ctx.weights
        grad_z = ctx.terms_backward(
            grad_normalised, centered, mu, sigma, norm, grad_out, ctx.shape_factor, scale_weight, center_weight
        )
        return grad_z, None, None, None, None, None, None, None


class Layout:
    """How a match op takes the projections (V, N, K) (``to``), and how its gradient comes back (``back``)."""

    def __init__(self, to: Callable[[torch.Tensor], torch.Tensor], back: Callable[[torch.Tensor, tuple], torch.Tensor]):
        self.to, self.back = to, back

    def __call__(self, proj: torch.Tensor) -> torch.Tensor:
        return self.to(proj)


def _slice_rows(proj: torch.Tensor) -> torch.Tensor:
    return proj.transpose(-1, -2).reshape(-1, proj.shape[-2])


def _view_columns(proj: torch.Tensor) -> torch.Tensor:
    return proj.reshape(-1, *proj.shape[-2:]).contiguous()


# (..., N, K) -> (S, N), S = prod(...) * K: the extension's layout (a copy)
slice_rows = Layout(_slice_rows, lambda grad, shape: grad.reshape(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2))
# (..., N, K) -> (V, N, K): the Triton kernel's layout (no copy for a matmul output)
view_columns = Layout(_view_columns, lambda grad, shape: grad.reshape(shape))


def make_stages(
    match: MatchOp,
    layout: Layout,
    terms_for: Optional[Callable[[torch.Tensor], Optional[TermsOps]]] = None,
    loss_ops: Optional[Tuple[Callable[..., tuple], Callable[..., torch.Tensor]]] = None,
    host_blas: bool = False,
) -> Dict[str, Callable]:
    """The dispatcher's ``sliced_wasserstein``, ``visreg`` and ``rdmreg`` stages over one match op,
    with the eager reference's signatures. ``terms_for(z)``: VISReg's terms ops for z's device, or None
    (the reference's terms around the match). ``loss_ops``: SWD's and RDMReg's forward and backward each
    as one op (``ProjectedMatchLoss``; the match op in ``layout`` inside). ``host_blas``: CPU tensors are
    real CPU work (the extension), whose backward GEMM ``back_project`` arranges for the host's BLAS; the
    triton backend's CPU tensors stand in for CUDA ones in the interpreter and keep the CUDA arrangement."""

    def loss(x, directions, target):
        if loss_ops is not None:
            return ProjectedMatchLoss.apply(x, directions, target, loss_ops)
        return QuantileMatchLoss.apply(x, directions, target, match, layout)

    def views(x):
        return x.to(torch.float32).reshape(-1, *x.shape[-2:])

    def sliced_wasserstein(x, directions, target):
        return loss(views(x), directions, target.to(torch.float32))

    def visreg(z, directions, target, scale_weight=1.0, shape_weight=1.0, center_weight=1.0):
        terms = terms_for(z) if terms_for is not None else None
        if terms is not None:
            weights = (float(scale_weight), float(shape_weight), float(center_weight))
            host = host_blas and z.device.type == "cpu"
            return VisregLoss.apply(views(z), directions, target.to(torch.float32), weights, match, layout, terms, host)
        center, scale, normalised = reference.visreg_terms(z)
        shape = sliced_wasserstein(normalised, directions, target)
        return scale_weight * scale + shape_weight * shape + center_weight * center

    def rdmreg(z, directions, target_samples):
        target = layout(reference.project(target_samples, directions)).detach()
        return loss(views(z), directions, target)

    return {"sliced_wasserstein": sliced_wasserstein, "visreg": visreg, "rdmreg": rdmreg}
