"""Sort-and-match on Triton for N <= MAX_SORT_N: launcher and ``fused_sigreg::sort_match_triton``.

The op has the contract of the extension's ``sort_match`` in the (V, N, K) layout (see
``backends/sort_match.py``): it returns per-slice sums of squared residuals (V, K) and their gradient
(V, N, K), and is not differentiable itself; ``QuantileMatchLoss`` turns it into a loss whose
backward is one multiply. The projection stays torch's ``x @ W`` (the one eager computes), so ranks,
and hence gradients, agree with the reference even at near-ties.

A ``torch.library.custom_op`` with ``register_fake`` (like ``ecf_means_triton``, for the same
reason: ``triton_op`` fails opcheck under the interpreter).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ...kernels.sort_match import sort_match_kernel
from ..sort_match import make_stages, view_columns
from .configs import SORT_CONFIGS, CompileSpec, sort_config
from .launch import cdiv, launch
from .visreg_terms import OPS


def _check(proj: torch.Tensor, target: torch.Tensor) -> None:
    if proj.dim() != 3 or proj.dtype != torch.float32:
        raise ValueError(f"proj must be (V, N, K) float32, got {tuple(proj.shape)} {proj.dtype}")
    if target.dtype != torch.float32 or target.device != proj.device:
        raise ValueError(f"target must be float32 on {proj.device}, got {target.dtype} on {target.device}")
    if target.shape != proj.shape and tuple(target.shape) != (proj.shape[1],):
        raise ValueError(f"target must be (N,) = ({proj.shape[1]},) or {tuple(proj.shape)}, got {tuple(target.shape)}")


@torch.library.custom_op("fused_sigreg::sort_match_triton", mutates_args=())
def sort_match_triton(proj: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """proj (V, N, K) float32; target (N,) sorted float32 quantiles, or (V, N, K) float32 samples
    (sorted per slice inside). Returns sum_sq (V, K) and grad (V, N, K), both float32:
    sum_sq[v, k] = sum_i (sort(proj[v, :, k])_i - t_i)^2 and grad its derivative at the original rows."""
    _check(proj, target)
    V, N, K = proj.shape
    cfg = sort_config(N)
    proj, target = proj.contiguous(), target.contiguous()
    sum_sq = torch.empty((V, K), dtype=torch.float32, device=proj.device)
    grad = torch.empty_like(proj)
    launch(
        sort_match_kernel,
        (cdiv(K, cfg.block_s), V),
        (proj, target, sum_sq, grad, N, K),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_S=cfg.block_s,
        TWO_SAMPLE=target.dim() == 3,
        num_warps=cfg.num_warps,
    )
    return sum_sq, grad


@sort_match_triton.register_fake
def _(proj, target):
    torch._check(proj.dim() == 3 and proj.dtype == torch.float32, lambda: f"proj must be (V, N, K) float32, got {proj}")
    torch._check(
        target.shape == proj.shape or tuple(target.shape) == (proj.shape[1],),
        lambda: f"target must be (N,) or {tuple(proj.shape)}, got {tuple(target.shape)}",
    )
    return proj.new_empty((proj.shape[0], proj.shape[2])), torch.empty_like(proj)


STAGES = make_stages(sort_match_triton, view_columns, lambda z: OPS)


def compile_specs():
    """Every (config, one-/two-sample) the launcher can pick, for ``compile_check``."""
    pointers = ("proj_ptr", "target_ptr", "sum_sq_ptr", "grad_ptr")
    for cfg in SORT_CONFIGS:
        for two_sample in (False, True):
            constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_S=cfg.block_s, TWO_SAMPLE=two_sample)
            signature = {
                **{p: "*fp32" for p in pointers},
                "N": "i32",
                "K": "i32",
                **{c: "constexpr" for c in constexprs},
            }
            yield CompileSpec(
                sort_match_kernel,
                f"BN{cfg.block_n} BS{cfg.block_s} w{cfg.num_warps}",
                "two-sample" if two_sample else "quantiles",
                signature,
                constexprs,
                cfg.num_warps,
                aligned_pointers=pointers,
            )
