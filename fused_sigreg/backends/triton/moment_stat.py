"""lejepa's moment-family statistics on Triton: launcher and ``fused_sigreg::moment_stat_triton``.

The op has the contract of the extension's ``moment_stat`` (``backends/moment_stat.py``): samples
(B, N, K) float32 -> per-column statistics (B, K) and their gradient (B, N, K); not differentiable
itself. A ``torch.library.custom_op`` with ``register_fake``, as ``sort_stat_triton``.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton

from ...kernels.moment_stat import moment_stat_kernel
from ..moment_stat import IDS, MAX_ORDER, make_stages
from .configs import MOMENT_CONFIG, CompileSpec
from .launch import launch


def _orders(statistic: int, k_max: int) -> Tuple[int, int]:
    """(highest power summed, coefficients of the gradient polynomial)."""
    return (k_max, k_max) if statistic == IDS["moments"] else (2 if statistic == IDS["vcreg"] else 4, 4)


@torch.library.custom_op("fused_sigreg::moment_stat_triton", mutates_args=())
def moment_stat_triton(
    proj: torch.Tensor, statistic: int, k_max: int, closed: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """proj (B, N, K) float32 -> (value (B, K), grad (B, N, K)), both float32: the statistic ``statistic``
    (``IDS``) of each column and its gradient; ``closed``: the reference's clamp of the sd passes the
    gradient at its bound."""
    if proj.dim() != 3 or proj.dtype != torch.float32:
        raise ValueError(f"proj must be (B, N, K) float32, got {tuple(proj.shape)} {proj.dtype}")
    if statistic not in IDS.values():
        raise ValueError(f"statistic must be an id in {sorted(IDS.values())}, got {statistic}")
    if statistic == IDS["moments"] and not 1 <= k_max <= MAX_ORDER:
        raise ValueError(f"k_max must be in [1, {MAX_ORDER}], got {k_max}")
    B, N, K = proj.shape
    if N < 1:
        raise ValueError(f"proj needs at least one row per column, got N = {N}")
    proj = proj.contiguous()
    value = torch.empty((B, K), dtype=torch.float32, device=proj.device)
    grad = torch.empty_like(proj)
    if proj.numel() == 0:
        return value, grad
    order, degree = _orders(statistic, k_max)
    cfg = MOMENT_CONFIG
    launch(
        moment_stat_kernel,
        (triton.cdiv(K, cfg.block_s), B),
        (proj, value, grad, N, K, int(closed)),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        BLOCK_P=triton.next_power_of_2(max(order, degree)),
        STAT=statistic,
        ORDER=order,
        DEGREE=degree,
        num_warps=cfg.num_warps,
    )
    return value, grad


@moment_stat_triton.register_fake
def _(proj, statistic, k_max, closed):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (B, N, K) float32, got {proj}")
    return proj.new_empty((proj.shape[0], proj.shape[2])), torch.empty_like(proj)


STAGES = make_stages(moment_stat_triton)


def compile_specs():
    """Every statistic at lejepa's default k_max (4) and the widest (MAX_ORDER), for ``compile_check``."""
    cfg = MOMENT_CONFIG
    pointers = ("proj_ptr", "value_ptr", "grad_ptr")
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
            **{p: "*fp32" for p in pointers},
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
