"""lejepa's EDF-family statistics on Triton for N <= MAX_STAT_N: launcher and ``fused_sigreg::sort_stat_triton``.

The op has the contract of the extension's ``sort_stat`` in the (V, N, K) layout (``backends/sort_stat.py``):
per-slice statistics (V, K) and their gradient (V, N, K); not differentiable itself. A
``torch.library.custom_op`` with ``register_fake``, as ``sort_match_triton``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...kernels.sort_stat import sort_stat_kernel
from ..sort_match import view_columns
from ..sort_stat import IDS, make_stages
from .configs import F64_STAT_CONFIGS, MAX_STAT_N, STAT_CONFIGS, CompileSpec, f64_stat_config, sort_config
from .launch import cdiv, launch


def _config(statistic: int, n: int):
    """Anderson-Darling's float64 log Phi terms take 4 keys per thread (kernels/sort_stat.py)."""
    return f64_stat_config(n) if statistic == IDS["anderson_darling"] else sort_config(n)


def _configs(statistic: int):
    return F64_STAT_CONFIGS if statistic == IDS["anderson_darling"] else STAT_CONFIGS


def _check(proj: torch.Tensor, statistic: int, weights: Optional[torch.Tensor]) -> None:
    if proj.dim() != 3 or proj.dtype != torch.float32:
        raise ValueError(f"proj must be (V, N, K) float32, got {tuple(proj.shape)} {proj.dtype}")
    if statistic not in IDS.values():
        raise ValueError(f"statistic must be an id in {sorted(IDS.values())}, got {statistic}")
    if statistic == IDS["shapiro_wilk"] and (
        weights is None or weights.shape != (proj.shape[1],) or weights.dtype != torch.float32
    ):
        raise ValueError(f"Shapiro-Wilk needs its weights, float32 ({proj.shape[1]},); got {weights}")


@torch.library.custom_op("fused_sigreg::sort_stat_triton", mutates_args=())
def sort_stat_triton(
    proj: torch.Tensor, statistic: int, eps: float, m: int, weights: Optional[torch.Tensor], closed: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """proj (V, N, K) float32 -> (value (V, K), grad (V, N, K)), both float32: the statistic ``statistic``
    (``IDS``) of each column and its gradient at the original rows; ``closed``: the references' clamps
    pass the gradient at their bounds."""
    _check(proj, statistic, weights)
    V, N, K = proj.shape
    if N > MAX_STAT_N:
        raise ValueError(f"sort_stat_triton takes at most {MAX_STAT_N} values per slice, got N = {N}")
    cfg = _config(statistic, N)
    proj = proj.contiguous()
    value = torch.empty((V, K), dtype=torch.float32, device=proj.device)
    grad = torch.empty_like(proj)
    launch(
        sort_stat_kernel,
        (cdiv(K, cfg.block_s), V),
        (proj, proj if weights is None else weights.contiguous(), value, grad, N, K, m, eps, int(closed)),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        STAT=statistic,
        num_warps=cfg.num_warps,
    )
    return value, grad


@sort_stat_triton.register_fake
def _(proj, statistic, eps, m, weights, closed):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (V, N, K) float32, got {proj}")
    return proj.new_empty((proj.shape[0], proj.shape[2])), torch.empty_like(proj)


def _triton_stat(samples, statistic, eps, m, weights, closed):
    value, grad = sort_stat_triton(view_columns(samples), statistic, eps, m, weights, closed)
    return value.reshape(samples.shape[:-2] + samples.shape[-1:]), grad.reshape(samples.shape)


STAGES = make_stages(_triton_stat)


def compile_specs():
    """Every (config, statistic) the launcher can pick, for ``compile_check``."""
    pointers = ("proj_ptr", "weights_ptr", "value_ptr", "grad_ptr")
    for name, statistic in IDS.items():
        for cfg in _configs(statistic):
            constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_S=cfg.block_s, STAT=statistic)
            signature = {
                **{p: "*fp32" for p in pointers},
                "N": "i32",
                "K": "i32",
                "m": "i32",
                "eps": "fp32",
                "closed": "i32",
                **{c: "constexpr" for c in constexprs},
            }
            yield CompileSpec(
                sort_stat_kernel,
                f"BN{cfg.block_n} BS{cfg.block_s} w{cfg.num_warps}",
                name,
                signature,
                constexprs,
                cfg.num_warps,
                aligned_pointers=pointers,
            )
