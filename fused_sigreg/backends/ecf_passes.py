"""SIGReg's ECF stage over stored projections, shared by the cpu backend (C++ passes) and the triton
backend's default CUDA path (Triton passes): P = x A by matmul, one pass over P for the knots'
cos/sin sums and, in backward, one pass that overwrites the saved P with dP followed by dX = dP A^T.
Never an (N, K, T) tensor.

Keeping P and reusing its memory for dP costs only the two unavoidable matmuls and holds at most P
(or dP) and dX; recomputing P would add a third matmul for no memory gain.
Overwriting a saved tensor bumps its version, so a second backward through the same graph
(retain_graph) fails loudly in autograd instead of reading dP as P.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import reference
from ..dispatch import check_first_order
from ..slicing import shared_quadrature


@dataclass(frozen=True)
class EcfPasses:
    """One backend's passes over P (V, N, K) float32, each a custom op.

    sums(P, delta, n_points) -> (V, 2, T, K) float32 sums over N of cos / sin(j delta p);
    stat(P, delta, t, phi, weights) -> (stat (V, K), base (V, 2, T, K)) float32: SIGReg per slice from those
    sums and the coefficients of its derivative in p, (t, phi, weights) the (T,) quadrature;
    grad(P, coef, delta, scale=None, alpha=1.0) -> dP, with coef (V, 2, T, K) the coefficients of cos and
    sin, times alpha * scale (V, K) per slice when given (any strides);
    grad_(P, coef, delta, scale=None, alpha=1.0) -> None, the same written over P."""

    name: str  # how errors name the backend, e.g. "the cpu backend"
    sums: Callable
    stat: Callable
    grad: Callable
    grad_: Callable
    # 16-bit x: project on tensor cores (``project``), not in float32 as the reference does
    tensor_cores: bool = False


LOW_PRECISION = (torch.bfloat16, torch.float16)
# whether torch.mm has its out_dtype kernel on CUDA (torch >= 2.8)
_MM_FLOAT32_OUT_CUDA = torch._C._dispatch_has_kernel_for_dispatch_key("aten::mm.dtype", "CUDA")


@torch.library.custom_op("fused_sigreg::mm_float32_out", mutates_args=())
def mm_float32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.mm(a, b, out_dtype=torch.float32)`` of 16-bit a, b where torch has no such kernel (CPU tensors:
    Triton's interpreter; CUDA before torch 2.8): the products, exact in float32, summed in float32. One op,
    as on CUDA, and opaque to torch.compile, whose CPU code would drop the rounding of b (Inductor elides a
    to(bfloat16).to(float32) pair)."""
    return torch.mm(a.float(), b.float())


@mm_float32_out.register_fake
def _(a, b):
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.float32)


def project(x: torch.Tensor, directions: torch.Tensor, tensor_cores: bool = False) -> torch.Tensor:
    """P = x A (..., N, K) float32. With ``tensor_cores``, 16-bit x multiplies A rounded to x's dtype in one
    GEMM that accumulates and writes float32 (``torch.mm``'s out_dtype; the fully fused kernel's rounding):
    on an H100 the 16-bit GEMM's peak is ~15x the float32 one's, where the reference converts x to float32
    first. Otherwise the reference's float32 product."""
    if not (tensor_cores and x.dtype in LOW_PRECISION):
        return reference.project(x, directions).float()
    a = directions.to(x.dtype)
    rows = x.reshape(-1, x.shape[-1])
    if x.is_cuda and _MM_FLOAT32_OUT_CUDA:
        p = torch.mm(rows, a, out_dtype=torch.float32)
    else:
        p = mm_float32_out(rows, a)
    return p.view(*x.shape[:-1], a.shape[1])


class EcfMeans(torch.autograd.Function):
    """(x (..., N, D), directions (D, K), t_max, n_points, passes) -> (cos_mean, sin_mean), each (..., K, T)
    float32, with the knot sums and dP computed by ``passes``."""

    @staticmethod
    def forward(ctx, x, directions, t_max: float, n_points: int, passes: EcfPasses):
        proj = project(x, directions, passes.tensor_cores)
        views = (proj if proj.dim() == 3 else proj.unsqueeze(0)).contiguous()
        sums = passes.sums(views, t_max / (n_points - 1), n_points)  # (V, 2, T, K)
        means = (sums / x.shape[-2]).transpose(-1, -2)  # (V, 2, K, T)
        cos_mean, sin_mean = means[:, 0].contiguous(), means[:, 1].contiguous()
        ctx.save_for_backward(views, directions)
        ctx.args = (t_max, n_points, x.shape, x.dtype, passes)
        if x.dim() == 2:
            return cos_mean[0], sin_mean[0]
        return cos_mean, sin_mean

    @staticmethod
    def backward(ctx, grad_cos, grad_sin):
        t_max, n_points, shape, dtype, passes = ctx.args
        views, directions = _saved(ctx, passes)
        V, N, K = views.shape
        t = shared_quadrature(t_max, n_points, views.device).t
        zeros = lambda: torch.zeros((V, K, n_points), dtype=torch.float32, device=views.device)
        gc = zeros() if grad_cos is None else grad_cos.reshape(V, K, n_points).float()
        gs = zeros() if grad_sin is None else grad_sin.reshape(V, K, n_points).float()
        # d cos_mean / dp = -t sin(t p) / N, d sin_mean / dp = t cos(t p) / N
        coef = torch.stack((gs * (t / N), gc * (-t / N)), dim=1).transpose(-1, -2).contiguous()  # (V, 2, T, K)
        dx = _dx(views, directions, coef, t, t_max, passes, lambda: grads_batched(grad_cos, grad_sin))
        return dx.reshape(shape).to(dtype), None, None, None, None


class EcfStat(torch.autograd.Function):
    """(x (..., N, D), directions (D, K), t_max, n_points, passes, reduction) -> SIGReg per slice (..., K)
    float32 on one batch (no average over ranks), N sum_j w_j |ECF(t_j) - phi_j|^2, or its "mean" / "sum":
    the projection, one custom op for the knot sums and the statistic (and the reduction, as the reference
    reduces), and in backward the dP pass, which scales by the incoming gradient itself (the reduction's
    backward included: no kernel for either), and dX = dP A^T."""

    @staticmethod
    def forward(ctx, x, directions, t_max: float, n_points: int, passes: EcfPasses, reduction=None):
        proj = project(x, directions, passes.tensor_cores)
        views = (proj if proj.dim() == 3 else proj.unsqueeze(0)).contiguous()
        quad = shared_quadrature(t_max, n_points, views.device)
        stat, base = passes.stat(views, t_max / (n_points - 1), quad.t, quad.phi, quad.weights)
        ctx.save_for_backward(views, directions, base)
        ctx.args = (t_max, n_points, x.shape, x.dtype, passes, reduction)
        return reference.reduce_statistics(stat if x.dim() == 3 else stat[0], reduction)

    @staticmethod
    def backward(ctx, grad_stat):
        t_max, n_points, shape, dtype, passes, reduction = ctx.args
        views, directions, base = _saved(ctx, passes)
        V, _, K = views.shape
        # the pass multiplies base (V, 2, T, K) by the statistic's gradient per slice itself, read through
        # its strides: a reduced statistic's scalar gradient is expanded, with the mean's 1 / (V K) as alpha
        alpha = 1.0 / (V * K) if reduction == "mean" else 1.0
        scale = (grad_stat.expand(V, K) if reduction is not None else grad_stat.reshape(V, K)).float()
        t = shared_quadrature(t_max, n_points, views.device).t
        dx = _dx(views, directions, base, t, t_max, passes, lambda: grads_batched(grad_stat), scale, alpha)
        return dx.reshape(shape).to(dtype), None, None, None, None, None


def _saved(ctx, passes: EcfPasses):
    check_first_order(f"SIGReg on {passes.name}")
    try:
        return ctx.saved_tensors
    except RuntimeError as e:
        # only autograd's version check: the saved P was overwritten by dP in the first backward (other
        # errors, e.g. of activation checkpointing's recompute on unpacking, pass through as they are)
        if "modified by an inplace operation" not in str(e):
            raise
        raise RuntimeError(
            f"fused_sigreg: {passes.name}'s SIGReg backward reuses the saved projections' memory, so each "
            "graph can be backpropagated once; for a second backward (retain_graph=True) call sigreg again "
            "or use backend='eager'"
        ) from e


def _dx(
    views,
    directions,
    coef,
    t,
    t_max: float,
    passes: EcfPasses,
    batched: Callable[[], bool],
    scale=None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """dX (V, N, D) float32 = dP A^T, dP = g (sum_j coef[:, 0, j] cos(t_j p) + coef[:, 1, j] sin(t_j p)) with g
    alpha times the (V, K) ``scale`` (1 when None); ``batched()``: whether autograd vmaps this backward
    (asked only outside torch.compile)."""
    delta = t_max / (t.shape[0] - 1)
    if not torch.compiler.is_compiling() and batched():
        # a batched backward (is_grads_batched=True, jacobian(vectorize=True)) vmaps this function, and the
        # passes have no batching rule: form dP from the saved P with torch ops, which vmap batches
        dp = _ecf_grad_torch(views, coef if scale is None else coef * (scale * alpha)[..., None, None, :], t)
    elif torch.compiler.is_compiling():
        # the functional op: inductor's pass that decomposes a traced in-place op fails on it when
        # shapes are dynamic, and a compiled graph plans its buffers itself
        dp = passes.grad(views, coef, delta, scale, alpha)
    else:
        passes.grad_(views, coef, delta, scale, alpha)  # views now holds dP
        # a custom op does not bump the version counter itself: do it, so that reusing this graph raises
        torch.autograd.graph.increment_version(views)
        dp = views
    return dp @ directions.float().t()


def grads_batched(*grads) -> bool:
    """Whether autograd runs this backward vmapped over a batch of output gradients."""
    is_batched = torch._C._functorch
    return torch._C._are_functorch_transforms_active() or any(
        g is not None and (is_batched.is_legacy_batchedtensor(g) or is_batched.is_batchedtensor(g)) for g in grads
    )


def _ecf_grad_torch(views: torch.Tensor, coef: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dP = sum_j coef_cos[j] cos(t_j p) + coef_sin[j] sin(t_j p) over (V, N, T, K): what the grad pass computes,
    materialised, for the rare batched backward."""
    angles = views.unsqueeze(-2) * t[:, None]  # (V, N, T, K)
    return (angles.cos() * coef[:, 0].unsqueeze(1) + angles.sin() * coef[:, 1].unsqueeze(1)).sum(-2)


def make_ecf_means(passes: EcfPasses) -> Callable:
    """The ``ecf_means`` stage (x (..., N, D), directions (D, K), t_max, n_points) -> (cos_mean, sin_mean)
    on ``passes``."""

    def ecf_means(x, directions, t_max, n_points):
        return EcfMeans.apply(x, directions, float(t_max), int(n_points), passes)

    return ecf_means


def make_sigreg_stats(passes: EcfPasses) -> Callable:
    """The ``sigreg_stats`` stage (x (..., N, D), directions (D, K), t_max, n_points, reduction=None) -> SIGReg
    per slice (..., K) on this batch alone, or its "mean" / "sum", on ``passes``."""

    def sigreg_stats(x, directions, t_max, n_points, reduction=None):
        return EcfStat.apply(x, directions, float(t_max), int(n_points), passes, reduction)

    return sigreg_stats
