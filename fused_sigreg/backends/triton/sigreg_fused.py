"""Fully fused SIGReg stage on Triton (``memory="min"``): launchers, configs and autograd for
``fused_sigreg::ecf_means_triton``.

The op maps x (N, D) or (V, N, D) and directions (D, K) to the ECF means (cos_mean, sin_mean),
each (..., K, T) float32, exactly like ``reference.ecf_means(reference.project(x, A), t)``.
It saves only its inputs for backward; the backward kernel recomputes the projection. The forward's
sums are int64 fixed point (V, 2, T, K), added to by atomics from every row tile: O(V K T) whatever N,
and deterministic (integer addition does not depend on the order).

It is a ``torch.library.custom_op`` (with ``register_fake`` and ``register_autograd``), so
torch.compile treats it as one opaque node and ``torch.library.opcheck`` applies. A
``triton_op`` would let inductor see inside, but it fails opcheck's fake-tensor test under the
interpreter, which is how CI runs these kernels (docs/design.md §7).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ...dispatch import check_first_order
from ...kernels.sigreg_fused import SUM_SCALE, sigreg_fused_backward_kernel, sigreg_fused_forward_kernel
from .configs import (
    BACKWARD_ALIGNED_CONFIGS,
    BACKWARD_CONFIGS,
    FORWARD_CONFIGS,
    RESEED,
    CompileSpec,
    KernelConfig,
    fp32_matmul_uses_tf32,
    interpreter_mode,
    precisions,
)
from .launch import cdiv, launch, sm_count


def forward_config(V: int, N: int, K: int, device: torch.device) -> KernelConfig:
    """Large tiles once they still give every SM two programs; small tiles otherwise."""
    big = FORWARD_CONFIGS[0]
    programs = V * cdiv(N, big.block_n) * cdiv(K, big.block_k)
    return big if programs >= 2 * sm_count(device) else FORWARD_CONFIGS[1]


def backward_config(V: int, N: int, device: torch.device) -> KernelConfig:
    big = BACKWARD_CONFIGS[0]
    programs = V * cdiv(N, big.block_n)
    return big if programs >= sm_count(device) else BACKWARD_CONFIGS[1]


def _operands(x: torch.Tensor, directions: torch.Tensor):
    """Contiguous (V, N, D) x and (D, K) directions in x's dtype (fp32 for fp32 x), rounded by torch."""
    xv = (x if x.dim() == 3 else x.unsqueeze(0)).contiguous()
    return xv, directions.to(x.dtype).contiguous()


def _launch(kernel, grid, args, config: KernelConfig, constexprs: dict) -> None:
    emulate = interpreter_mode() and args[0].dtype != torch.float32  # args[0] is x
    launch(
        kernel,
        grid,
        args,
        config,
        **config.constexprs(),
        **constexprs,
        EMULATE_16BIT_DOT=emulate,
        RESEED=RESEED,
        num_warps=config.num_warps,
    )


@torch.library.custom_op("fused_sigreg::ecf_means_triton", mutates_args=())
def ecf_means_triton(
    x: torch.Tensor, directions: torch.Tensor, t_max: float, n_points: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos_mean, sin_mean), each (..., K, T) float32, of x (..., N, D) projected on directions (D, K).

    fp32 dots use tf32 when torch's fp32 matmul setting says so at run time, as cuBLAS does in eager
    (read here, inside the op, because torch.compile cannot trace the newer setting's getter)."""
    allow_tf32 = fp32_matmul_uses_tf32()
    xv, a = _operands(x, directions)
    V, N, D = xv.shape
    K, T = a.shape[1], n_points
    at = a.t().contiguous()  # (K, D): the kernel reads both operands along D (kernels/sigreg_fused.py)
    cfg = forward_config(V, N, K, x.device)
    if N >= 2**31:  # the fixed-point sums hold |sum| < 2^31 (kernels/sigreg_fused.py: SUM_SCALE)
        raise ValueError(f"sigreg(memory='min') takes fewer than 2**31 rows per view, got N = {N}")
    n_tiles = cdiv(N, cfg.block_n)
    sums = torch.zeros((V, 2, T, K), dtype=torch.int64, device=x.device)
    bad = torch.zeros((V, K), dtype=torch.int32, device=x.device)
    grid = (n_tiles, cdiv(K, cfg.block_k), V)
    _launch(
        sigreg_fused_forward_kernel,
        grid,
        (xv, at, sums, bad, N, D, K, T, n_tiles, t_max / (T - 1)),
        cfg,
        dict(DOT_PRECISION=precisions(x.dtype, allow_tf32)["DOT_PRECISION"], D_ALIGNED=D % 16 == 0),
    )
    # Exact integer sums back to float: one result whatever order the atomics ran in.
    means = (sums.double() / (SUM_SCALE * N)).float().transpose(-1, -2)  # (V, 2, K, T)
    means = means.masked_fill(bad.bool()[:, None, :, None], float("nan"))
    # always copies: custom-op outputs must not alias each other (contiguous() would not copy at K = 1)
    cos_mean, sin_mean = (means[:, i].clone(memory_format=torch.contiguous_format) for i in (0, 1))
    if x.dim() == 2:
        return cos_mean[0], sin_mean[0]
    return cos_mean, sin_mean


def _fake_check(x: torch.Tensor, directions: torch.Tensor) -> None:
    torch._check(x.dim() in (2, 3), lambda: f"x must be (N, D) or (V, N, D), got shape {tuple(x.shape)}")
    torch._check(
        directions.dim() == 2 and directions.shape[0] == x.shape[-1],
        lambda: f"directions must be (D, K) with D = {x.shape[-1]}, got shape {tuple(directions.shape)}",
    )


@ecf_means_triton.register_fake
def _(x, directions, t_max, n_points):
    _fake_check(x, directions)
    shape = (*x.shape[:-2], directions.shape[1], n_points)
    return x.new_empty(shape, dtype=torch.float32), x.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("fused_sigreg::ecf_means_triton_backward", mutates_args=())
def ecf_means_triton_backward(
    x: torch.Tensor,
    directions: torch.Tensor,
    grad_cos: torch.Tensor,
    grad_sin: torch.Tensor,
    t_max: float,
    n_points: int,
) -> torch.Tensor:
    """dL/dx from dL/dcos_mean and dL/dsin_mean (..., K, T):
    dP = sum_j w_cos cos(t_j p) + w_sin sin(t_j p), dX = dP A^T.
    Reads the tf32 setting when backward runs, as eager's backward matmul does."""
    allow_tf32 = fp32_matmul_uses_tf32()
    xv, a = _operands(x, directions)
    V, N, D = xv.shape
    K, T = a.shape[1], n_points
    t = torch.linspace(0.0, t_max, T, dtype=torch.float32, device=x.device)
    # d cos_mean / dp = -t sin(t p) / N and d sin_mean / dp = t cos(t p) / N.
    w_cos = grad_sin.reshape(V, K, T).float() * (t / N)
    w_sin = grad_cos.reshape(V, K, T).float() * (-t / N)
    coef = torch.stack((w_cos, w_sin), dim=1).transpose(-1, -2).contiguous()  # (V, 2, T, K)
    cfg = backward_config(V, N, x.device)
    n_tiles = cdiv(N, cfg.block_n)
    dx = torch.zeros((V, N, D), dtype=torch.float32, device=x.device)
    _launch(
        sigreg_fused_backward_kernel,
        (n_tiles, V),
        (xv, a, coef, dx, N, D, K, T, n_tiles, t_max / (T - 1)),
        cfg,
        dict(precisions(x.dtype, allow_tf32), ALIGNED=D % 16 == 0 and K % 16 == 0 and cfg in BACKWARD_ALIGNED_CONFIGS),
    )
    return dx.to(x.dtype).reshape(x.shape)


@ecf_means_triton_backward.register_fake
def _(x, directions, grad_cos, grad_sin, t_max, n_points):
    _fake_check(x, directions)
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, directions, t_max, n_points = inputs
    ctx.save_for_backward(x, directions)
    ctx.args = (t_max, n_points)


def _backward(ctx, grad_cos, grad_sin):
    check_first_order("SIGReg on the triton backend")
    x, directions = ctx.saved_tensors
    shape = (*x.shape[:-2], directions.shape[1], ctx.args[1])
    zeros = lambda: torch.zeros(shape, dtype=torch.float32, device=x.device)
    grad_cos = zeros() if grad_cos is None else grad_cos
    grad_sin = zeros() if grad_sin is None else grad_sin
    dx = ecf_means_triton_backward(x, directions, grad_cos, grad_sin, *ctx.args)
    return dx, None, None, None


ecf_means_triton.register_autograd(_backward, setup_context=_setup_context)


def ecf_means(x: torch.Tensor, directions: torch.Tensor, t_max: float, n_points: int):
    """The fully fused ``ecf_means`` stage (``sigreg(memory="min")``; ``sigreg_passes.py`` routes to it)."""
    return ecf_means_triton(x, directions, float(t_max), int(n_points))


# ------------------------------------------------------------------------------- compile check

INPUT_VARIANTS = (  # (label, element type of x and A, allow_tf32): every dtype/precision the launcher uses
    ("fp32 ieee", "fp32", False),
    ("fp32 tf32", "fp32", True),
    ("bf16", "bf16", False),
    ("fp16", "fp16", False),
)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compile_specs():
    """Every (kernel, config, dtype variant) this module can launch on a GPU, for ``compile_check``."""
    kernels = (
        (
            sigreg_fused_forward_kernel,
            FORWARD_CONFIGS,
            {"at_ptr": None, "out_ptr": "*i64", "bad_ptr": "*i32"},
            ("DOT_PRECISION",),
            "D_ALIGNED",
        ),
        (
            sigreg_fused_backward_kernel,
            BACKWARD_CONFIGS,
            {"a_ptr": None, "coef_ptr": "*fp32", "dx_ptr": "*fp32"},
            ("DOT_PRECISION", "DX_PRECISION"),
            "ALIGNED",
        ),
    )
    for kernel, configs, pointers, precision_args, alignment_flag in kernels:
        for cfg in configs:
            aligned_variants = (False, True)
            if kernel is sigreg_fused_backward_kernel and cfg not in BACKWARD_ALIGNED_CONFIGS:
                aligned_variants = (False,)
            for label, elem, allow_tf32 in INPUT_VARIANTS:
                for aligned in aligned_variants:
                    chosen = precisions(_DTYPES[elem], allow_tf32)
                    constexprs = dict(
                        cfg.constexprs(),
                        **{k: chosen[k] for k in precision_args},
                        EMULATE_16BIT_DOT=False,
                        RESEED=RESEED,
                        **{alignment_flag: aligned},
                    )
                    signature = {
                        "x_ptr": f"*{elem}",
                        **{name: kind or f"*{elem}" for name, kind in pointers.items()},
                        **{n: "i32" for n in ("N", "D", "K", "T", "n_row_tiles")},
                        "delta": "fp32",
                        **{c: "constexpr" for c in constexprs},
                    }
                    yield CompileSpec(
                        kernel,
                        f"BN{cfg.block_n} BK{cfg.block_k} BD{cfg.block_d} w{cfg.num_warps}",
                        label + (f" {alignment_flag}" if aligned else ""),
                        signature,
                        constexprs,
                        cfg.num_warps,
                        aligned_pointers=("x_ptr", *pointers),
                    )
