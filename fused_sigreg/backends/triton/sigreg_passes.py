"""SIGReg's default path on CUDA: projections and dX by torch.matmul (cuBLAS, tf32 as the user set it)
and the Triton passes over the stored P (``kernels/ecf_passes.py``) as the custom ops
``fused_sigreg::ecf_sums_triton``, ``ecf_grad_triton`` and ``ecf_grad_triton_inplace``, plugged into
``backends/ecf_passes.py`` exactly as the cpu backend plugs in its C++ passes.

Saved for backward: the inputs and P (V N K 4 bytes, 17x below eager's (N, K, T) argument at T = 17);
the forward's partial sums are O(SMs x BLOCK_K x T), whatever N (``partial_shape``).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from ...kernels.common import KNOT_UNROLL
from ...kernels.ecf_passes import ecf_grad_kernel, ecf_stat_kernel, ecf_sums_kernel
from ...reference import epps_pulley_from_ecf, reduce_statistics
from ...slicing import shared_quadrature
from ..ecf_passes import EcfPasses, make_ecf_means, make_sigreg_stats
from .configs import (
    COLSUMS_CONFIG,
    DP_CONFIG,
    PROGRAMS_PER_SM,
    RESEED,
    SPLIT_ROWS_MIN,
    STAT_CONFIG,
    CompileSpec,
)
from .launch import cdiv, kernel_op, launch, sm_count
from .sigreg_fused import ecf_means as fused_ecf_means


@functools.lru_cache(maxsize=256)
def partial_shape(V: int, N: int, K: int, T: int, device: torch.device):
    """(V, splits, 2, T, K) of the forward's fp64 partial sums: PROGRAMS_PER_SM programs per SM over the
    column tiles and views, each walking at least SPLIT_ROWS_MIN rows. Bounded in N. Cached: a training
    run asks for the same few shapes every step."""
    col_tiles = cdiv(K, COLSUMS_CONFIG.block_k)
    wanted = cdiv(PROGRAMS_PER_SM * sm_count(device), V * col_tiles)
    splits = max(1, min(wanted, cdiv(N, SPLIT_ROWS_MIN)))
    # as many splits as ceil(N / splits)-row splits take: none is empty (the pass writes each split's slot
    # from its first row tile, so an empty split would leave its slot unwritten)
    splits = cdiv(N, cdiv(N, splits)) if N > 0 else 1
    return (V, splits, 2, T, K)


def _check_proj(proj: torch.Tensor) -> None:
    if proj.dim() != 3 or proj.dtype != torch.float32 or not proj.is_contiguous():
        raise ValueError(f"proj must be a contiguous (V, N, K) float32 tensor, got {tuple(proj.shape)} {proj.dtype}")


def _check_coef(proj: torch.Tensor, coef: torch.Tensor) -> None:
    V, _, K = proj.shape
    if coef.dim() != 4 or coef.dtype != torch.float32 or (coef.shape[0], coef.shape[1], coef.shape[3]) != (V, 2, K):
        raise ValueError(f"coef must be float32 (V, 2, T, K) = ({V}, 2, T, {K}), got {tuple(coef.shape)} {coef.dtype}")


def _partial_sums(proj: torch.Tensor, delta: float, n_points: int) -> torch.Tensor:
    """The forward pass: (V, splits, 2, n_points, K) fp64 partial sums of cos / sin(j delta p) over row splits."""
    _check_proj(proj)
    V, N, K = proj.shape
    shape = partial_shape(V, N, K, n_points, proj.device)
    # the pass writes every slot from each split's first rows; with no rows there is nothing to write
    partial = (torch.empty if N > 0 else torch.zeros)(shape, dtype=torch.float64, device=proj.device)
    rows_per_split = cdiv(N, shape[1])
    cfg = COLSUMS_CONFIG
    launch(
        ecf_sums_kernel,
        (cdiv(K, cfg.block_k), shape[1], V),
        (proj, partial, N, K, n_points, rows_per_split, shape[1], delta),
        cfg,
        **cfg.constexprs(),
        RESEED=RESEED,
        num_warps=cfg.num_warps,
    )
    return partial


@kernel_op("ecf_sums_triton(Tensor proj, float delta, int n_points) -> Tensor")
def ecf_sums_triton(proj: torch.Tensor, delta: float, n_points: int) -> torch.Tensor:
    """proj (V, N, K) float32 -> (V, 2, n_points, K) float32: sums over N of cos / sin(j delta p), in fp64
    partial sums over row splits reduced in a fixed order (deterministic)."""
    return _partial_sums(proj, delta, n_points).sum(dim=1).float()


@kernel_op("ecf_stat_triton(Tensor proj, float delta, Tensor t, Tensor phi, Tensor weights) -> (Tensor, Tensor)")
def ecf_stat_triton(
    proj: torch.Tensor, delta: float, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """proj (V, N, K) float32 and the (T,) float32 quadrature (t_j = j delta) -> (stat (V, K), base (V, 2, T, K)),
    both float32: SIGReg's statistic per slice and the coefficients of its derivative in p
    (``kernels/ecf_passes.py`` ecf_stat_kernel; the twin of the extension's ``ecf_stat``). Two launches:
    the pass over P and the statistic."""
    for name, q in (("t", t), ("phi", phi), ("weights", weights)):
        if q.dim() != 1 or q.dtype != torch.float32 or q.shape != t.shape or q.device != proj.device:
            raise ValueError(f"{name} must be a (T,) float32 tensor on proj's device like t {tuple(t.shape)}, got {q}")
    n_points = t.shape[0]
    partial = _partial_sums(proj, delta, n_points)
    V, N, K = proj.shape
    stat = proj.new_empty((V, K))
    base = proj.new_empty((V, 2, n_points, K))
    cfg = STAT_CONFIG
    launch(
        ecf_stat_kernel,
        (cdiv(K, cfg.block_k), V),
        (partial, t.contiguous(), phi.contiguous(), weights.contiguous(), stat, base, N, K, partial.shape[1]),
        cfg,
        T=n_points,
        BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps,
    )
    return stat, base


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


@torch.library.register_fake(ecf_sums_triton)
def _(proj, delta, n_points):
    _fake_check(proj)
    return proj.new_empty((proj.shape[0], 2, n_points, proj.shape[2]))


@torch.library.register_fake(ecf_stat_triton)
def _(proj, delta, t, phi, weights):
    _fake_check(proj)
    V, _, K = proj.shape
    return proj.new_empty((V, K)), proj.new_empty((V, 2, t.shape[0], K))


def _check_scale(proj: torch.Tensor, scale: Optional[torch.Tensor]) -> None:
    V, _, K = proj.shape
    if scale is not None and (scale.shape != (V, K) or scale.dtype != torch.float32 or scale.device != proj.device):
        raise ValueError(f"scale must be float32 (V, K) = ({V}, {K}) on proj's device, got {scale}")


def _launch_dp(
    proj: torch.Tensor, coef: torch.Tensor, delta: float, out: torch.Tensor, scale: Optional[torch.Tensor], alpha: float
) -> None:
    _check_proj(proj)
    _check_coef(proj, coef)
    _check_scale(proj, scale)
    V, N, K = proj.shape
    cfg = DP_CONFIG
    strides = (0, 0) if scale is None else scale.stride()
    launch(
        ecf_grad_kernel,
        (cdiv(N, cfg.block_n), cdiv(K, cfg.block_k), V),
        (proj, coef.contiguous(), out, coef if scale is None else scale, N, K, coef.shape[2], *strides, delta, alpha),
        cfg,
        **cfg.constexprs(),
        RESEED=RESEED,
        SCALED=scale is not None,
        num_warps=cfg.num_warps,
    )


@kernel_op("ecf_grad_triton(Tensor proj, Tensor coef, float delta, Tensor? scale=None, float alpha=1.0) -> Tensor")
def ecf_grad_triton(
    proj: torch.Tensor, coef: torch.Tensor, delta: float, scale: Optional[torch.Tensor] = None, alpha: float = 1.0
) -> torch.Tensor:
    """dP (V, N, K) float32 = g[v, k] sum_j coef[:, 0, j] cos(j delta p) + coef[:, 1, j] sin(j delta p), g
    alpha times the (V, K) float32 ``scale`` in any strides (1 when None)."""
    out = torch.empty_like(proj)
    _launch_dp(proj, coef, delta, out, scale, alpha)
    return out


@torch.library.register_fake(ecf_grad_triton)
def _(proj, coef, delta, scale=None, alpha=1.0):
    _fake_check(proj, coef)
    return torch.empty_like(proj)


@kernel_op(
    "ecf_grad_triton_inplace(Tensor(a!) proj, Tensor coef, float delta, Tensor? scale=None, float alpha=1.0) -> ()"
)
def ecf_grad_triton_inplace(
    proj: torch.Tensor, coef: torch.Tensor, delta: float, scale: Optional[torch.Tensor] = None, alpha: float = 1.0
) -> None:
    """``ecf_grad_triton`` written over proj: backward's dP takes the place of the saved P."""
    _launch_dp(proj, coef, delta, proj, scale, alpha)


@torch.library.register_fake(ecf_grad_triton_inplace)
def _(proj, coef, delta, scale=None, alpha=1.0):
    _fake_check(proj, coef)


PASSES = EcfPasses(
    "the triton backend",
    ecf_sums_triton,
    ecf_stat_triton,
    ecf_grad_triton,
    ecf_grad_triton_inplace,
    tensor_cores=True,
)
ecf_means_over_p = make_ecf_means(PASSES)
sigreg_stats_over_p = make_sigreg_stats(PASSES)

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


def sigreg_stats(x: torch.Tensor, directions: torch.Tensor, t_max: float, n_points: int, reduction=None):
    """The ``sigreg_stats`` stage (memory="auto", one batch): the passes over stored P with the statistic
    formed by the pass's own op, or the fully fused kernel's means when P would not fit."""
    if p_fits(x, directions):
        return sigreg_stats_over_p(x, directions, t_max, n_points, reduction)
    return sigreg_stats_fused(x, directions, t_max, n_points, reduction)


def sigreg_stats_fused(x: torch.Tensor, directions: torch.Tensor, t_max: float, n_points: int, reduction=None):
    """SIGReg per slice on one batch (or its "mean" / "sum") from the fully fused kernel's ECF means (nothing
    of size N K kept)."""
    cos_mean, sin_mean = fused_ecf_means(x, directions, t_max, n_points)
    quad = shared_quadrature(t_max, n_points, x.device)
    return reduce_statistics(epps_pulley_from_ecf(cos_mean, sin_mean, quad, x.shape[-2]), reduction)


# what the dispatcher's triton backend calls; "ecf_means_min" is sigreg(memory="min")
STAGES = {"ecf_means": ecf_means, "sigreg_stats": sigreg_stats, "ecf_means_min": fused_ecf_means}


# n_points of the statistic kernel checked ahead of time (T is a constexpr there: its loop unrolls): lejepa's
# 17 and the paper's Algorithm 1's 9; another value compiles on its first call.
STAT_CHECKED_POINTS = (9, 17)


def compile_specs():
    """Both passes at their one config and the statistic kernel at STAT_CHECKED_POINTS, for ``compile_check``."""
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
        knot_elements=cfg.block_n * cfg.block_k // (32 * cfg.num_warps),
        knots_per_iteration=KNOT_UNROLL.value,
    )
    cfg = DP_CONFIG
    for scaled in (True, False):  # SIGReg's backward scales by the statistic's gradient; the ECF means' does not
        constexprs = dict(cfg.constexprs(), RESEED=RESEED, SCALED=scaled)
        yield CompileSpec(
            ecf_grad_kernel,
            f"BN{cfg.block_n} BK{cfg.block_k} w{cfg.num_warps}",
            "fp32 P, scaled" if scaled else "fp32 P",
            {
                **{n: "*fp32" for n in ("p_ptr", "coef_ptr", "dp_ptr", "scale_ptr")},
                **{n: "i32" for n in ("N", "K", "T", "scale_sv", "scale_sk")},
                "delta": "fp32",
                "alpha": "fp32",
                **{c: "constexpr" for c in constexprs},
            },
            constexprs,
            cfg.num_warps,
            aligned_pointers=("p_ptr", "coef_ptr", "dp_ptr"),
            knot_elements=cfg.block_n * cfg.block_k // (32 * cfg.num_warps),
            knots_per_iteration=KNOT_UNROLL.value,
        )
    cfg = STAT_CONFIG
    for n_points in STAT_CHECKED_POINTS:
        constexprs = dict(T=n_points, BLOCK_K=cfg.block_k)
        yield CompileSpec(
            ecf_stat_kernel,
            f"BK{cfg.block_k} w{cfg.num_warps}",
            f"T={n_points}",
            {
                "partial_ptr": "*fp64",
                **{n: "*fp32" for n in ("t_ptr", "phi_ptr", "w_ptr", "stat_ptr", "base_ptr")},
                **{n: "i32" for n in ("N", "K", "n_splits")},
                **{c: "constexpr" for c in constexprs},
            },
            constexprs,
            cfg.num_warps,
            aligned_pointers=("partial_ptr", "stat_ptr", "base_ptr"),
        )
