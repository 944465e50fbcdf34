"""lejepa's moment-family statistics on Triton: launchers and ``fused_sigreg::moment_stat_triton`` /
``fused_sigreg::moment_stat_backward_triton``.

The ops have the contract of the extension's ``moment_stat`` / ``moment_stat_backward``
(``backends/moment_stat.py``): samples (B, N, K) float32 -> per-column statistics (B, K), the gradient
polynomial's coefficients (B, degree, K) float64 and centres (B, K); then the gradient (B, N, K) for an
incoming (B, K). Not differentiable themselves. ``torch.library.custom_op`` with ``register_fake``, as
``sort_stat_triton``.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton

from ...kernels.moment_stat import moment_stat_backward_kernel, moment_stat_kernel
from ..moment_stat import IDS, MAX_ORDER, make_stages
from .configs import MOMENT_CONFIG, CompileSpec
from .launch import cdiv, launch


def _orders(statistic: int, k_max: int) -> Tuple[int, int]:
    """(highest power summed, coefficients of the gradient polynomial)."""
    return (k_max, k_max) if statistic == IDS["moments"] else (2 if statistic == IDS["vcreg"] else 4, 4)


def _check(proj: torch.Tensor) -> None:
    if proj.dim() != 3 or proj.dtype != torch.float32:
        raise ValueError(f"proj must be (B, N, K) float32, got {tuple(proj.shape)} {proj.dtype}")
    if proj.shape[1] < 1:
        raise ValueError(f"proj needs at least one row per column, got N = {proj.shape[1]}")


@torch.library.custom_op("fused_sigreg::moment_stat_triton", mutates_args=())
def moment_stat_triton(
    proj: torch.Tensor, statistic: int, k_max: int, closed: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """proj (B, N, K) float32 -> (value (B, K) float32, coef (B, degree, K) float64, centre (B, K)
    float32): the statistic ``statistic`` (``IDS``) of each column and its gradient's polynomial in
    proj - centre; ``closed``: the reference's clamp of the sd passes the gradient at its bound."""
    _check(proj)
    if statistic not in IDS.values():
        raise ValueError(f"statistic must be an id in {sorted(IDS.values())}, got {statistic}")
    if statistic == IDS["moments"] and not 1 <= k_max <= MAX_ORDER:
        raise ValueError(f"k_max must be in [1, {MAX_ORDER}], got {k_max}")
    B, N, K = proj.shape
    order, degree = _orders(statistic, k_max)
    proj = proj.contiguous()
    value = proj.new_empty((B, K))
    coef = proj.new_empty((B, degree, K), dtype=torch.float64)
    centre = proj.new_empty((B, K))
    if proj.numel() == 0:
        return value, coef, centre
    cfg = MOMENT_CONFIG
    launch(
        moment_stat_kernel,
        (cdiv(K, cfg.block_s), B),
        (proj, value, coef, centre, N, K, int(closed)),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        BLOCK_P=triton.next_power_of_2(max(order, degree)),
        STAT=statistic,
        ORDER=order,
        DEGREE=degree,
        num_warps=cfg.num_warps,
    )
    return value, coef, centre


@moment_stat_triton.register_fake
def _(proj, statistic, k_max, closed):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (B, N, K) float32, got {proj}")
    degree = _orders(statistic, k_max)[1]
    B, _, K = proj.shape
    return proj.new_empty((B, K)), proj.new_empty((B, degree, K), dtype=torch.float64), proj.new_empty((B, K))


@torch.library.custom_op("fused_sigreg::moment_stat_backward_triton", mutates_args=())
def moment_stat_backward_triton(
    proj: torch.Tensor, coef: torch.Tensor, centre: torch.Tensor, grad_out: torch.Tensor
) -> torch.Tensor:
    """grad (B, N, K) float32 = grad_out (B, K)[:, None] * sum_q coef[:, q] (proj - centre)^q."""
    _check(proj)
    B, N, K = proj.shape
    if coef.dim() != 3 or coef.shape[0] != B or coef.shape[2] != K or coef.dtype != torch.float64:
        raise ValueError(
            f"coef must be float64 (B, degree, K) for proj {tuple(proj.shape)}, got {coef.shape} {coef.dtype}"
        )
    for name, t in (("centre", centre), ("grad_out", grad_out)):
        if t.shape != (B, K) or t.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 {(B, K)}, got {tuple(t.shape)} {t.dtype}")
    proj = proj.contiguous()
    grad = torch.empty_like(proj)
    if proj.numel() == 0:
        return grad
    degree = coef.shape[1]
    cfg = MOMENT_CONFIG
    launch(
        moment_stat_backward_kernel,
        (cdiv(K, cfg.block_s), B),
        (proj, coef.contiguous(), centre.contiguous(), grad_out.contiguous(), grad, N, K),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        BLOCK_P=triton.next_power_of_2(degree),
        DEGREE=degree,
        num_warps=cfg.num_warps,
    )
    return grad


@moment_stat_backward_triton.register_fake
def _(proj, coef, centre, grad_out):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (B, N, K) float32, got {proj}")
    return torch.empty_like(proj)


STAGES = make_stages(moment_stat_triton, moment_stat_backward_triton)


def compile_specs():
    """Every statistic at lejepa's default k_max (4) and the widest (MAX_ORDER), for ``compile_check``."""
    cfg = MOMENT_CONFIG
    pointers = ("proj_ptr", "value_ptr", "coef_ptr", "centre_ptr")
    variants = [("moments k4", IDS["moments"], 4), (f"moments k{MAX_ORDER}", IDS["moments"], MAX_ORDER)]
    variants += [(name, i, 4) for name, i in IDS.items() if name != "moments"]
    for variant, statistic, k_max in variants:
        order, degree = _orders(statistic, k_max)
        constexprs = dict(
            BLOCK_N=cfg.block_n,
            BLOCK_S=cfg.block_s,
            BLOCK_P=triton.next_power_of_2(max(order, degree)),
            STAT=statistic,
            ORDER=order,
            DEGREE=degree,
        )
        signature = {
            **{p: "*fp64" if p == "coef_ptr" else "*fp32" for p in pointers},
            "N": "i32",
            "K": "i32",
            "closed": "i32",
            **{c: "constexpr" for c in constexprs},
        }
        yield CompileSpec(
            moment_stat_kernel,
            f"BN{cfg.block_n} BS{cfg.block_s} w{cfg.num_warps}",
            variant,
            signature,
            constexprs,
            cfg.num_warps,
            aligned_pointers=pointers,
        )
    backward_pointers = ("proj_ptr", "coef_ptr", "centre_ptr", "grad_out_ptr", "grad_ptr")
    for degree in sorted({_orders(statistic, k_max)[1] for _, statistic, k_max in variants}):
        constexprs = dict(
            BLOCK_N=cfg.block_n, BLOCK_S=cfg.block_s, BLOCK_P=triton.next_power_of_2(degree), DEGREE=degree
        )
        signature = {
            **{p: "*fp64" if p == "coef_ptr" else "*fp32" for p in backward_pointers},
            "N": "i32",
            "K": "i32",
            **{c: "constexpr" for c in constexprs},
        }
        yield CompileSpec(
            moment_stat_backward_kernel,
            f"BN{cfg.block_n} BS{cfg.block_s} w{cfg.num_warps}",
            f"degree {degree}",
            signature,
            constexprs,
            cfg.num_warps,
            aligned_pointers=backward_pointers,
        )
