"""SIGReg's default path on CUDA: projections and dX by torch.matmul (cuBLAS, tf32 as the user set it)
and the Triton passes over the stored P (``kernels/ecf_passes.py``) as the custom ops
``fused_sigreg::ecf_sums_triton``, ``ecf_grad_triton`` and ``ecf_grad_triton_inplace``, plugged into
``backends/ecf_passes.py`` exactly as the cpu backend plugs in its C++ passes.

Saved for backward: the inputs and P (V N K 4 bytes, 17x below eager's (N, K, T) argument at T = 17);
the forward's partial sums are O(SMs x BLOCK_K x T), whatever N (``partial_shape``).
"""

from __future__ import annotations

import torch
import triton

from ...kernels.ecf_passes import ecf_grad_kernel, ecf_sums_kernel
from ..ecf_passes import EcfPasses, make_ecf_means
from .configs import (
    COLSUMS_CONFIG,
    DP_CONFIG,
    PROGRAMS_PER_SM,
    RESEED,
    SPLIT_ROWS_MIN,
    CompileSpec,
)
from .launch import launch, sm_count
from .sigreg_fused import ecf_means as fused_ecf_means


def partial_shape(V: int, N: int, K: int, T: int, device: torch.device):
    """(V, splits, 2, T, K) of the forward's fp64 partial sums: PROGRAMS_PER_SM programs per SM over the
    column tiles and views, each walking at least SPLIT_ROWS_MIN rows. Bounded in N."""
    col_tiles = triton.cdiv(K, COLSUMS_CONFIG.block_k)
    wanted = triton.cdiv(PROGRAMS_PER_SM * sm_count(device), V * col_tiles)
    splits = max(1, min(wanted, triton.cdiv(N, SPLIT_ROWS_MIN)))
    return (V, splits, 2, T, K)


def _check_proj(proj: torch.Tensor) -> None:
    if proj.dim() != 3 or proj.dtype != torch.float32 or not proj.is_contiguous():
        raise ValueError(f"proj must be a contiguous (V, N, K) float32 tensor, got {tuple(proj.shape)} {proj.dtype}")


def _check_coef(proj: torch.Tensor, coef: torch.Tensor) -> None:
    V, _, K = proj.shape
    if coef.dim() != 4 or coef.dtype != torch.float32 or (coef.shape[0], coef.shape[1], coef.shape[3]) != (V, 2, K):
        raise ValueError(f"coef must be float32 (V, 2, T, K) = ({V}, 2, T, {K}), got {tuple(coef.shape)} {coef.dtype}")


@torch.library.custom_op("fused_sigreg::ecf_sums_triton", mutates_args=())
def ecf_sums_triton(proj: torch.Tensor, delta: float, n_points: int) -> torch.Tensor:
    """proj (V, N, K) float32 -> (V, 2, n_points, K) float32: sums over N of cos / sin(j delta p), in fp64
    partial sums over row splits reduced in a fixed order (deterministic)."""
    _check_proj(proj)
    V, N, K = proj.shape
    shape = partial_shape(V, N, K, n_points, proj.device)
    partial = torch.zeros(shape, dtype=torch.float64, device=proj.device)
    rows_per_split = triton.cdiv(N, shape[1])
    cfg = COLSUMS_CONFIG
    launch(
        ecf_sums_kernel,
        (triton.cdiv(K, cfg.block_k), shape[1], V),
        (proj, partial, N, K, n_points, rows_per_split, shape[1], delta),
        cfg,
        **cfg.constexprs(),
        RESEED=RESEED,
        num_warps=cfg.num_warps,
    )
    return partial.sum(dim=1).float()


def _fake_check(proj: torch.Tensor, coef=None) -> None:
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (V, N, K) float32, got {proj}")
    if coef is not None:
        torch._check(
            coef.dim() == 4
            and coef.shape[0] == proj.shape[0]
            and coef.shape[1] == 2
            and coef.shape[3] == proj.shape[2],
            lambda: f"coef must be (V, 2, T, K) for proj {tuple(proj.shape)}, got {tuple(coef.shape)}",
        )


@ecf_sums_triton.register_fake
def _(proj, delta, n_points):
    _fake_check(proj)
    return proj.new_empty((proj.shape[0], 2, n_points, proj.shape[2]))


def _launch_dp(proj: torch.Tensor, coef: torch.Tensor, delta: float, out: torch.Tensor) -> None:
    _check_proj(proj)
    _check_coef(proj, coef)
    V, N, K = proj.shape
    cfg = DP_CONFIG
    launch(
        ecf_grad_kernel,
        (triton.cdiv(N, cfg.block_n), triton.cdiv(K, cfg.block_k), V),
        (proj, coef.contiguous(), out, N, K, coef.shape[2], delta),
        cfg,
        **cfg.constexprs(),
        RESEED=RESEED,
        num_warps=cfg.num_warps,
    )


@torch.library.custom_op("fused_sigreg::ecf_grad_triton", mutates_args=())
def ecf_grad_triton(proj: torch.Tensor, coef: torch.Tensor, delta: float) -> torch.Tensor:
    """dP (V, N, K) float32 = sum_j coef[:, 0, j] cos(j delta p) + coef[:, 1, j] sin(j delta p)."""
    out = torch.empty_like(proj)
    _launch_dp(proj, coef, delta, out)
    return out


@ecf_grad_triton.register_fake
def _(proj, coef, delta):
    _fake_check(proj, coef)
    return torch.empty_like(proj)


@torch.library.custom_op("fused_sigreg::ecf_grad_triton_inplace", mutates_args=("proj",))
def ecf_grad_triton_inplace(proj: torch.Tensor, coef: torch.Tensor, delta: float) -> None:
    """``ecf_grad_triton`` written over proj: backward's dP takes the place of the saved P."""
    _launch_dp(proj, coef, delta, proj)


@ecf_grad_triton_inplace.register_fake
def _(proj, coef, delta):
    _fake_check(proj, coef)


PASSES = EcfPasses("the triton backend", ecf_sums_triton, ecf_grad_triton, ecf_grad_triton_inplace)
ecf_means_over_p = make_ecf_means(PASSES)

# memory="auto" keeps P when it takes at most this fraction of the GPU's total memory (P lives until
# backward, which adds dX and the rest of the step's activations beside it). A rule of the call and the
# device alone: routing on free memory made one call change path, bits and speed with memory pressure,
# and cost two allocator queries per call.
P_TOTAL_FRACTION = 0.125


def p_fits(x: torch.Tensor, directions: torch.Tensor) -> bool:
    """The rule of memory="auto": keep P (V N K float32) when it takes at most P_TOTAL_FRACTION of the
    total memory of x's GPU (torch caches the device's properties: no driver call, nothing that stops a
    CUDA-graph capture). Off CUDA (the interpreter) and while torch.compile traces, P is kept."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return True
    p_bytes = 4 * (x.numel() // x.shape[-1]) * directions.shape[1]
    return p_bytes <= P_TOTAL_FRACTION * torch.cuda.get_device_properties(x.device).total_memory


def ecf_means(x: torch.Tensor, directions: torch.Tensor, t_max: float, n_points: int):
    """The ``ecf_means`` stage (memory="auto"): the passes over stored P, or the fully fused kernel
    when P would not fit (``p_fits``)."""
    if p_fits(x, directions):
        return ecf_means_over_p(x, directions, t_max, n_points)
    return fused_ecf_means(x, directions, t_max, n_points)


# what the dispatcher's triton backend calls; "ecf_means_min" is sigreg(memory="min")
STAGES = {"ecf_means": ecf_means, "ecf_means_min": fused_ecf_means}


def compile_specs():
    """Both passes at their one config, for ``compile_check``."""
    cfg = COLSUMS_CONFIG
    constexprs = dict(cfg.constexprs(), RESEED=RESEED)
    yield CompileSpec(
        ecf_sums_kernel,
        f"BN{cfg.block_n} BK{cfg.block_k} w{cfg.num_warps}",
        "fp32 P",
        {
            "p_ptr": "*fp32",
            "out_ptr": "*fp64",
            **{n: "i32" for n in ("N", "K", "T", "rows_per_split", "n_splits")},
            "delta": "fp32",
            **{c: "constexpr" for c in constexprs},
        },
        constexprs,
        cfg.num_warps,
        aligned_pointers=("p_ptr", "out_ptr"),
    )
    cfg = DP_CONFIG
    constexprs = dict(cfg.constexprs(), RESEED=RESEED)
    yield CompileSpec(
        ecf_grad_kernel,
        f"BN{cfg.block_n} BK{cfg.block_k} w{cfg.num_warps}",
        "fp32 P",
        {
            "p_ptr": "*fp32",
            "coef_ptr": "*fp32",
            "dp_ptr": "*fp32",
            **{n: "i32" for n in ("N", "K", "T")},
            "delta": "fp32",
            **{c: "constexpr" for c in constexprs},
        },
        constexprs,
        cfg.num_warps,
        aligned_pointers=("p_ptr", "coef_ptr", "dp_ptr"),
    )
