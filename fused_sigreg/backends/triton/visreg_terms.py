"""VISReg's centre and scale terms on Triton: launchers and ``fused_sigreg::visreg_terms_triton`` /
``fused_sigreg::visreg_terms_backward_triton``, with the contract of the extension's CPU ops
``visreg_terms`` / ``visreg_terms_backward`` (``csrc/ops.cpp``; used by ``backends/sort_match.py``).
``torch.library.custom_op`` with ``register_fake``, as ``sort_match_triton``.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy
import torch

from ...kernels.visreg_terms import visreg_terms_backward_kernel, visreg_terms_kernel
from ..sort_match import center_norm
from .configs import TERMS_CONFIG, CompileSpec
from .launch import cdiv, launch


def _check(t: torch.Tensor, name: str) -> None:
    if t.dim() != 3 or t.dtype != torch.float32:
        raise ValueError(f"{name} must be (V, N, D) float32, got {tuple(t.shape)} {t.dtype}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} needs at least one row, got N = {t.shape[1]}")


def _check_columns(t: torch.Tensor, name: str, V: int, D: int) -> None:
    if t.dtype != torch.float32 or t.numel() != V * D or t.shape[0] != V or t.shape[-1] != D:
        raise ValueError(f"{name} must be float32 (V, D) or (V, 1, D) = {(V, D)}, got {tuple(t.shape)} {t.dtype}")


# sigma = norm * (1 / sqrt N) + eps is two kernels in torch, each rounding; Triton would contract it into
# one FMA by default, and sigma must be torch's to the bit (it divides the normalised values)
FORWARD_OPTIONS = dict(enable_fp_fusion=False)


def _grid(V: int, D: int):
    return (cdiv(D, TERMS_CONFIG.block_k), V)


def _root_n(n: int, reciprocal: bool) -> float:
    """sqrt(N) as float32, or the float32 reciprocal of that float32 (torch's CUDA division by a scalar)."""
    root = numpy.float32(math.sqrt(n))
    return float(numpy.float32(1.0) / root) if reciprocal else float(root)


@torch.library.custom_op("fused_sigreg::visreg_terms_triton", mutates_args=())
def visreg_terms_triton(
    centered: torch.Tensor, mu: torch.Tensor, norm: torch.Tensor, eps: float, scale_weight: float, center_weight: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """centered (V, N, D) float32, mu (V, [1,] D), norm (V, D) -> (normalised (V, N, D), terms () float32,
    sigma (V, D)), as the extension's ``visreg_terms``."""
    _check(centered, "centered")
    V, N, D = centered.shape
    _check_columns(mu, "mu", V, D)
    _check_columns(norm, "norm", V, D)
    centered = centered.contiguous()
    normalised = torch.empty_like(centered)
    sigma = centered.new_empty((V, D))
    shares = centered.new_empty((V, D))
    if centered.numel() == 0:
        return normalised, centered.new_zeros(()), sigma
    cfg = TERMS_CONFIG
    reciprocal = centered.is_cuda
    launch(
        visreg_terms_kernel,
        _grid(V, D),
        (
            centered,
            mu.contiguous(),
            norm.contiguous(),
            normalised,
            sigma,
            shares,
            N,
            D,
            _root_n(N, reciprocal),
            eps,
            scale_weight,
            center_weight,
            1.0 / (V * D),
        ),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_D=cfg.block_k,
        RECIPROCAL=reciprocal,
        num_warps=cfg.num_warps,
        **FORWARD_OPTIONS,
    )
    # the columns' shares are already divided by V D: their sum is the terms (a fixed-order reduction)
    return normalised, shares.sum(), sigma


@visreg_terms_triton.register_fake
def _(centered, mu, norm, eps, scale_weight, center_weight):
    torch._check(
        centered.dim() == 3 and centered.dtype == torch.float32,
        lambda: f"centered must be (V, N, D) float32, got {centered}",
    )
    V, _, D = centered.shape
    return torch.empty_like(centered), centered.new_empty(()), centered.new_empty((V, D))


@torch.library.custom_op("fused_sigreg::visreg_terms_backward_triton", mutates_args=())
def visreg_terms_backward_triton(
    grad_normalised: torch.Tensor,
    centered: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    norm: torch.Tensor,
    grad_out: torch.Tensor,
    shape_factor: float,
    scale_weight: float,
    center_weight: float,
) -> torch.Tensor:
    """grad_z (V, N, D), as the extension's ``visreg_terms_backward``."""
    _check(centered, "centered")
    _check(grad_normalised, "grad_normalised")
    V, N, D = centered.shape
    if grad_normalised.shape != centered.shape:
        raise ValueError(
            f"grad_normalised must be {tuple(centered.shape)} as centered, got {tuple(grad_normalised.shape)}"
        )
    for name, t in (("mu", mu), ("sigma", sigma), ("norm", norm)):
        _check_columns(t, name, V, D)
    if grad_out.numel() != 1 or grad_out.dtype != torch.float32:
        raise ValueError(f"grad_out must be one float32, got {tuple(grad_out.shape)} {grad_out.dtype}")
    centered = centered.contiguous()
    grad = torch.empty_like(centered)
    if centered.numel() == 0:
        return grad
    m = V * D
    cfg = TERMS_CONFIG
    launch(
        visreg_terms_backward_kernel,
        _grid(V, D),
        (
            grad_normalised.contiguous(),
            centered,
            mu.contiguous(),
            sigma.contiguous(),
            norm.contiguous(),
            grad_out,
            grad,
            N,
            D,
            shape_factor,
            2.0 * scale_weight / (m * math.sqrt(N)),
            2.0 * center_weight / (m * N),
        ),
        cfg,
        BLOCK_N=cfg.block_n,
        BLOCK_D=cfg.block_k,
        num_warps=cfg.num_warps,
    )
    return grad


@visreg_terms_backward_triton.register_fake
def _(grad_normalised, centered, mu, sigma, norm, grad_out, shape_factor, scale_weight, center_weight):
    torch._check(
        centered.dim() == 3 and centered.dtype == torch.float32,
        lambda: f"centered must be (V, N, D) float32, got {centered}",
    )
    return torch.empty_like(centered)


# (the centring is the reference's torch ops: on CUDA they read z once each and cost no more than a kernel)
OPS = (visreg_terms_triton, visreg_terms_backward_triton, center_norm)


def compile_specs():
    """Each kernel's one config (the forward with either division), for ``compile_check``."""
    cfg = TERMS_CONFIG
    label = f"BN{cfg.block_n} BD{cfg.block_k} w{cfg.num_warps}"
    forward = ("c_ptr", "mu_ptr", "norm_ptr", "out_ptr", "sigma_ptr", "share_ptr")
    for reciprocal in (True, False):
        constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_k, RECIPROCAL=reciprocal)
        signature = {
            **{p: "*fp32" for p in forward},
            "N": "i32",
            "D": "i32",
            **{s: "fp32" for s in ("root_n", "eps", "scale_weight", "center_weight", "inv_m")},
            **{c: "constexpr" for c in constexprs},
        }
        yield CompileSpec(
            visreg_terms_kernel,
            label,
            "reciprocal" if reciprocal else "division",
            signature,
            constexprs,
            cfg.num_warps,
            aligned_pointers=forward,
            options=FORWARD_OPTIONS,
        )
    constexprs = dict(BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_k)
    backward = ("g_ptr", "c_ptr", "mu_ptr", "sigma_ptr", "norm_ptr", "go_ptr", "out_ptr")
    signature = {
        **{p: "*fp32" for p in backward},
        "N": "i32",
        "D": "i32",
        **{s: "fp32" for s in ("shape_factor", "k_scale", "c_scale")},
        **{c: "constexpr" for c in constexprs},
    }
    yield CompileSpec(
        visreg_terms_backward_kernel, label, "fp32", signature, constexprs, cfg.num_warps, aligned_pointers=backward
    )
