"""lejepa's NLL on Triton for N <= MAX_STAT_N: launcher and ``fused_sigreg::sort_nll_triton``.

The op has the contract of the extension's ``sort_nll`` (``backends/order_nll.py``) in the (V, N, K) layout:
per-sample losses in lejepa's order, their slopes and, per input row, the output it feeds (int64); not
differentiable itself. A ``torch.library.custom_op`` with ``register_fake``, as ``sort_stat_triton``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...kernels.order_nll import sort_nll_kernel
from ..order_nll import make_stage
from ..sort_match import view_columns
from .configs import F64_STAT_CONFIGS, MAX_STAT_N, CompileSpec, f64_stat_config
from .launch import cdiv, launch


@torch.library.custom_op("fused_sigreg::sort_nll_triton", mutates_args=())
def sort_nll_triton(
    proj: torch.Tensor, constant: torch.Tensor, cutoffs: Optional[torch.Tensor], closed: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """proj (V, N, K) float32 -> (loss, slope, source), (V, N, K) each (source int64); constant (N,) and
    cutoffs (2, N) (or None) float32 as ``backends/order_nll.py`` builds them."""
    if proj.dim() != 3 or proj.dtype != torch.float32:
        raise ValueError(f"proj must be (V, N, K) float32, got {tuple(proj.shape)} {proj.dtype}")
    V, N, K = proj.shape
    if N > MAX_STAT_N:
        raise ValueError(f"sort_nll_triton takes at most {MAX_STAT_N} values per slice, got N = {N}")
    if constant.shape != (N,) or constant.dtype != torch.float32:
        raise ValueError(f"constant must be float32 ({N},), got {tuple(constant.shape)} {constant.dtype}")
    if cutoffs is not None and (cutoffs.shape != (2, N) or cutoffs.dtype != torch.float32):
        raise ValueError(f"cutoffs must be float32 (2, {N}), got {tuple(cutoffs.shape)} {cutoffs.dtype}")
    cfg = f64_stat_config(N)
    proj = proj.contiguous()
    loss, slope = torch.empty_like(proj), torch.empty_like(proj)
    source = torch.empty(proj.shape, dtype=torch.int64, device=proj.device)
    launch(
        sort_nll_kernel,
        (cdiv(K, cfg.block_s), V),
        (proj, constant, constant if cutoffs is None else cutoffs, loss, slope, source, N, K, int(closed)),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        MASKED=cutoffs is not None,
        num_warps=cfg.num_warps,
    )
    return loss, slope, source


@sort_nll_triton.register_fake
def _(proj, constant, cutoffs, closed):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (V, N, K) float32, got {proj}")
    return torch.empty_like(proj), torch.empty_like(proj), torch.empty_like(proj, dtype=torch.int64)


def _triton_nll(samples, constant, cutoffs, closed):
    outputs = sort_nll_triton(view_columns(samples), constant, cutoffs, closed)
    return tuple(t.reshape(samples.shape) for t in outputs)


STAGES = make_stage(_triton_nll)


def compile_specs():
    """Every (config, masking) the launcher can pick, for ``compile_check``."""
    pointers = ("proj_ptr", "constant_ptr", "cutoffs_ptr", "loss_ptr", "slope_ptr", "source_ptr")
    for cfg in F64_STAT_CONFIGS:
        for masked in (False, True):
            constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_S=cfg.block_s, MASKED=masked)
            signature = {
                **{p: ("*i64" if p == "source_ptr" else "*fp32") for p in pointers},
                "N": "i32",
                "K": "i32",
                "closed": "i32",
                **{c: "constexpr" for c in constexprs},
            }
            yield CompileSpec(
                sort_nll_kernel,
                f"BN{cfg.block_n} BS{cfg.block_s} w{cfg.num_warps}",
                "masked" if masked else "all",
                signature,
                constexprs,
                cfg.num_warps,
                aligned_pointers=pointers,
            )
