"""Full self-supervised objectives of the three papers: invariance term + regulariser."""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .ops.rdmreg import rdmreg
from .ops.sigreg import sigreg
from .ops.visreg import visreg
from .validation import as_int, check_embeddings, check_number, check_same_shape


def _check_forwarded(caller: str, kwargs: dict, op: Callable, own: str, reserved: tuple) -> None:
    """Name the objective, not the op it forwards to, when a keyword fits neither."""
    allowed = sorted(set(inspect.signature(op).parameters) - set(reserved))
    for key in kwargs:
        if key not in allowed:
            raise TypeError(
                f"{caller}() got an unexpected keyword argument {key!r}; its own are {own}, and the others "
                f"go to fused_sigreg.{op.__name__}: {', '.join(allowed)}"
            )


def _check_views(global_emb: torch.Tensor, all_emb: torch.Tensor) -> None:
    for name, t in (("global_emb", global_emb), ("all_emb", all_emb)):
        check_embeddings(t, name)
        if t.dim() != 3:
            raise ValueError(f"{name} must be (V, N, D), got shape {tuple(t.shape)}")
    if global_emb.shape[1:] != all_emb.shape[1:]:
        raise ValueError(
            f"global_emb and all_emb must share (N, D), got {tuple(global_emb.shape)} and {tuple(all_emb.shape)}"
        )


def lejepa_loss(global_emb: torch.Tensor, all_emb: torch.Tensor, lambd: float = 0.05, **sigreg_kwargs) -> torch.Tensor:
    """LeJEPA (paper Algorithm 2): (1 - lambd) * prediction + lambd * SIGReg.

    global_emb (Vg, N, D): embeddings of the global views; all_emb (V, N, D): of every view.
    prediction = mean over (V, N, D) of (mean_g global_emb - all_emb)^2; SIGReg is averaged over the
    V views of all_emb, which share directions. ``sigreg_kwargs`` go to ``fused_sigreg.sigreg``.
    """
    _check_forwarded("lejepa_loss", sigreg_kwargs, sigreg, "lambd (the SIGReg weight)", ("x", "reduction"))
    _check_views(global_emb, all_emb)
    check_number(lambd, "lambd")
    centers = global_emb.mean(dim=0)
    prediction = (centers - all_emb).square().mean()
    return (1.0 - lambd) * prediction + lambd * sigreg(all_emb, reduction="mean", **sigreg_kwargs)


def visreg_loss(proj: torch.Tensor, n_global: int, lamb: float = 0.9, **visreg_kwargs) -> torch.Tensor:
    """VISReg trainer's objective: lamb * VISReg(proj) + (1 - lamb) * invariance.

    proj (V, N, D) with the n_global global views first; invariance = mean over (V, N, D) of
    (proj - mean of the global views)^2. ``visreg_kwargs`` go to ``fused_sigreg.visreg``
    (``gather=True`` all-gathers the batch for the regulariser, as the trainer does).
    """
    _check_forwarded("visreg_loss", visreg_kwargs, visreg, "n_global, lamb (the VISReg weight)", ("z",))
    check_embeddings(proj, "proj")
    if proj.dim() != 3:
        raise ValueError(f"proj must be (V, N, D), got shape {tuple(proj.shape)}")
    n_global = as_int(n_global, "n_global", 1)
    if n_global > proj.shape[0]:
        raise ValueError(f"n_global must be <= the {proj.shape[0]} views of proj (V, N, D), got {n_global}")
    check_number(lamb, "lamb")
    _check_views(proj[:n_global], proj)
    invariance = (proj - proj[:n_global].mean(dim=0, keepdim=True)).square().mean()
    return lamb * visreg(proj, **visreg_kwargs) + (1.0 - lamb) * invariance


def rectified_lpjepa_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    lamb_inv: float = 25.0,
    lamb_reg: float = 125.0,
    generator: Optional[torch.Generator] = None,
    gather: bool = True,
    **rdmreg_kwargs,
) -> torch.Tensor:
    """Rectified LpJEPA: lamb_inv * mse(z1, z2) + lamb_reg * (RDMReg(z1) + RDMReg(z2)) / 2.

    z1, z2 (*, N, D) rectified features of two views. As in the official trainer
    (``rectified_lp_jepa_loss``), both views share one projection matrix, each view is matched to
    its own target samples, and the regulariser sees the batch all-gathered over ranks (``gather``).
    Defaults: invariance 25, RDMReg 125, 8192 projections, p = 1, mu = 0, sigma_GN, from the
    repository's ImageNet-100 config (``scripts/pretrain/imagenet-100/rectified_lpjepa_imagenet.yaml``);
    its CIFAR-100 MINIMAL.md uses lamb_reg = 250. ``rdmreg_kwargs`` go to ``fused_sigreg.rdmreg``
    (an explicit ``target_samples`` is (2, *, N, D): one target per view). For the official
    signature and its 3-tuple return, see ``fused_sigreg.compat.rectified_lpjepa``.
    """
    _check_forwarded("rectified_lpjepa_loss", rdmreg_kwargs, rdmreg, "lamb_inv, lamb_reg, generator, gather", ("z",))
    check_embeddings(z1, "z1")
    check_same_shape(z1, z2, "z1", "z2")
    check_number(lamb_inv, "lamb_inv")
    check_number(lamb_reg, "lamb_reg")
    invariance = F.mse_loss(z1, z2)
    # one rdmreg call on the stacked views: shared projections, one target per view, and the mean over
    # (2, N, M) equals the mean of the two views' losses since both views have N rows
    reg = rdmreg(torch.stack((z1, z2)), generator=generator, gather=gather, **rdmreg_kwargs)
    return lamb_inv * invariance + lamb_reg * reg
