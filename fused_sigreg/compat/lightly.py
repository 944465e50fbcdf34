"""lightly's LeJEPA and VISReg losses (PyPI ``lightly`` 1.6, ``lightly.loss``), computed by fused_sigreg.

``from fused_sigreg.compat.lightly import LeJEPALoss`` replaces ``from lightly.loss import LeJEPALoss``
(likewise ``SIGReg``, ``VISRegLoss`` and the module-level functions of ``lightly.loss.lejepa_loss`` and
``lightly.loss.visreg_loss``): same constructors, defaults and checks, same buffers (``SIGReg``'s ``t``,
``phi``, ``weights``; ``LeJEPALoss``'s ``sigreg.*``; none for ``VISRegLoss``), keyword-only
``forward(*, local_proj, global_proj)`` on (V, N, D) views, and one ``torch.randn(D, K)`` per call from
torch's global RNG in the input's dtype, normalised as lightly does, so a seeded run gives lightly's
numbers. Views are separate sample sets whose statistics are averaged, as in lightly.

The SIGReg projection and ECF, and VISReg's sorted shape term, run fused; the O(V N D) centre, scale and
invariance terms are the torch expressions. Result dtypes are lightly's: ``SIGReg`` / ``LeJEPALoss``
float32 for 16-bit input (lightly's float32 knots promote them), ``VISRegLoss`` the input's.
Under torch.distributed with ``gather_distributed=True``, SIGReg's sample count is summed exactly (lightly
sums it in the input dtype, inexact in bfloat16 beyond 256 samples): docs/compat.md.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .. import dispatch
from ..distributed import all_gather_batch, all_reduce_mean, check_ranks_agree, dtype_code, world_size
from ..ops.common import check_backend, check_input, flatten_views
from ..ops.outside_graph import official_randn
from ..ops.sigreg import sigreg
from ..ops.sliced_wasserstein import sliced_wasserstein
from ..reference import epps_pulley_from_ecf
from ..slicing import shared_quadrature
from ..validation import as_int, check_number
from .rule import RuleBuffers, matmul_result_dtype

__all__ = [
    "LeJEPALoss",
    "SIGReg",
    "VISRegLoss",
    "VISRegLossComponents",
    "lejepa_invariance_loss",
    "visreg_center_loss",
    "visreg_scale_loss",
    "visreg_shape_loss",
]


def _unit_columns(d: int, k: int, like: Tensor) -> Tensor:
    """lightly's draw: randn(D, K) in the input's dtype from the global RNG, columns divided by their norm."""
    a = official_randn(d, k, like)
    return a / a.norm(p=2, dim=0)


def _gathering(gather_distributed: bool) -> bool:
    return gather_distributed and world_size() > 1


def _check_weight(value, name: str, unit: bool = False) -> None:
    check_number(value, name, 0.0)
    if unit and value > 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def lejepa_invariance_loss(*, all_proj: Tensor, global_proj: Tensor) -> Tensor:
    """lightly's ``lejepa_invariance_loss``: mean over (views, N, D) of (mean of the global views - every view)^2."""
    return (global_proj.mean(0) - all_proj).square().mean()


class SIGReg(RuleBuffers):
    """lightly's ``SIGReg(*, knots=17, t_max=3.0, num_vectors=1024, gather_distributed=False)``, plus ``backend=``.

    Input (..., N, D) -> scalar: the mean over leading indices and slices of N * sum_j w_j |ECF - phi|^2.
    ``gather_distributed=True`` under torch.distributed: rank 0's directions, the ECF summed over ranks and
    divided by the total sample count (the statistic of the concatenated batch, unequal batches included).
    """

    def __init__(
        self,
        *,
        knots: int = 17,
        t_max: float = 3.0,
        num_vectors: int = 1024,
        gather_distributed: bool = False,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.knots = as_int(knots, "knots", 2)
        check_number(t_max, "t_max", 0.0, low_open=True)
        self.num_vectors = as_int(num_vectors, "num_vectors", 1)
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"gather_distributed must be a bool, got {type(gather_distributed).__name__}")
        check_backend(backend)
        self.gather_distributed, self.backend = gather_distributed, backend
        self.register_rule(t_max, self.knots)

    def forward(self, proj: Tensor) -> Tensor:
        check_input(proj, "proj", False)
        a = official_randn(proj.shape[-1], self.num_vectors, proj, broadcast=_gathering(self.gather_distributed))
        a = a / a.norm(p=2, dim=0)
        # lightly's float32 knots promote 16-bit input to a float32 loss, float64 stays float64; under
        # autocast its last matmul gives the autocast dtype
        out_dtype = matmul_result_dtype(proj, torch.promote_types(proj.dtype, torch.float32))
        if _gathering(self.gather_distributed):
            return self._over_ranks(proj, a).to(out_dtype)
        loss = sigreg(proj, directions=a, t_max=self.t_max, n_points=self.knots, backend=self.backend, sync=False)
        return loss.to(out_dtype)

    def _over_ranks(self, proj: Tensor, a: Tensor) -> Tensor:
        x = flatten_views(proj)
        cos_mean, sin_mean = dispatch.run("ecf_means", (x, a), self.backend, x, a, self.t_max, self.knots)
        check_ranks_agree(
            x.device,
            "lightly SIGReg's all_reduce of the ECF (gather_distributed=True)",
            num_vectors=a.shape[-1],
            knots=self.knots,
            **{"the view count": cos_mean.shape[:-2].numel(), "D": x.shape[-1], "the input dtype": dtype_code(x.dtype)},
        )
        n_local = x.shape[-2]
        # the sample count summed exactly, in int64 (lightly sums it in the input's dtype)
        count = torch.full((1,), n_local, dtype=torch.int64, device=x.device)
        torch.distributed.all_reduce(count)
        n_total = count.to(cos_mean.dtype)
        cos_sum = all_reduce_mean(cos_mean * n_local) * world_size()
        sin_sum = all_reduce_mean(sin_mean * n_local) * world_size()
        quad = shared_quadrature(self.t_max, self.knots, device=x.device)
        return epps_pulley_from_ecf(cos_sum / n_total, sin_sum / n_total, quad, n_total).mean()

    def extra_repr(self) -> str:
        return (
            f"knots={self.knots}, t_max={self.t_max:g}, num_vectors={self.num_vectors}, "
            f"gather_distributed={self.gather_distributed}"
        )


def _check_views(local_proj: Tensor, global_proj: Tensor, min_batch: int) -> None:
    for name, t in (("local_proj", local_proj), ("global_proj", global_proj)):
        check_input(t, name, False)
        if t.dim() != 3 or t.shape[0] < 1:
            raise ValueError(f"{name} must have shape (V, N, D) with V >= 1 views, got {tuple(t.shape)}")
    if local_proj.shape[1:] != global_proj.shape[1:]:
        raise ValueError(
            "local_proj and global_proj must have the same batch size N and dimension D, got "
            f"{tuple(local_proj.shape)} and {tuple(global_proj.shape)}"
        )
    if local_proj.shape[1] < min_batch:
        raise ValueError(f"the batch size N must be at least {min_batch}, got {local_proj.shape[1]}")


class LeJEPALoss(nn.Module):
    """lightly's ``LeJEPALoss(lambda_param=0.05, gather_distributed=False, sigreg_knots=17, sigreg_t_max=3.0,
    sigreg_num_vectors=1024)``, plus ``backend=``.

    ``forward(*, local_proj, global_proj)``: lambda * SIGReg(all views) + (1 - lambda) * invariance, the
    views concatenated global first; float32 for 16-bit input, as lightly's.
    """

    def __init__(
        self,
        lambda_param: float = 0.05,
        gather_distributed: bool = False,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        sigreg_num_vectors: int = 1024,
        *,
        backend: Optional[str] = None,
    ):
        super().__init__()
        _check_weight(lambda_param, "lambda_param", unit=True)
        self.lambda_param = lambda_param
        self.sigreg = SIGReg(
            knots=sigreg_knots,
            t_max=sigreg_t_max,
            num_vectors=sigreg_num_vectors,
            gather_distributed=gather_distributed,
            backend=backend,
        )

    def forward(self, *, local_proj: Tensor, global_proj: Tensor) -> Tensor:
        _check_views(local_proj, global_proj, 1)
        all_proj = torch.cat([global_proj, local_proj], dim=0)
        reg = self.sigreg(all_proj)
        inv = lejepa_invariance_loss(all_proj=all_proj, global_proj=global_proj)
        return self.lambda_param * reg + (1.0 - self.lambda_param) * inv


# ----------------------------------------------------------------------------------------- VISReg


def visreg_center_loss(z: Tensor) -> Tensor:
    """lightly's centre term: mean over (..., D) of the squared batch mean, z (..., N, D)."""
    return z.mean(dim=-2).square().mean()


def visreg_scale_loss(z: Tensor) -> Tensor:
    """lightly's scale term: mean over (..., D) of (1 - biased std over N)^2."""
    return (1.0 - z.std(dim=-2, unbiased=False)).square().mean()


def _shape(z: Tensor, a: Tensor, eps: float, backend: Optional[str]) -> Tensor:
    # the normalisation is O(N D) torch; the (N, K) projection, sort and quantile match are the fused op
    std = z.std(dim=-2, unbiased=False, keepdim=True)
    normalised = (z - z.mean(dim=-2, keepdim=True)) / (std.detach() + eps)
    return sliced_wasserstein(normalised, directions=a, backend=backend)


def visreg_shape_loss(z: Tensor, num_slices: int, eps: float = 1e-4, *, backend: Optional[str] = None) -> Tensor:
    """lightly's shape term: z (..., N, D) centred, divided by stopgrad(biased std) + eps, projected on
    ``num_slices`` fresh unit directions (global RNG, z's dtype) and matched, sorted, to the N(0,1)
    quantiles at i/(N+1); result in z's dtype."""
    num_slices = as_int(num_slices, "num_slices", 1)
    check_number(eps, "eps", 0.0, low_open=True)
    check_input(z, "z", False)
    return _shape(z, _unit_columns(z.shape[-1], num_slices, z), eps, backend).to(z.dtype)


class VISRegLossComponents(NamedTuple):
    """lightly's ``VISRegLossComponents``: the total and the unweighted terms."""

    total: Tensor
    pred: Tensor
    scale: Tensor
    shape: Tensor
    center: Tensor


class VISRegLoss(nn.Module):
    """lightly's ``VISRegLoss(lambda_param=0.9, num_slices=4096, lambda_scale=1.0, lambda_shape=1.0,
    lambda_center=1.0, gather_distributed=False, eps=1e-4)``, plus ``backend=``.

    total = (1 - lambda) * pred + lambda * (lambda_scale * scale + lambda_shape * shape + lambda_center * center),
    in the input's dtype. With ``gather_distributed=True`` the three regularisation terms see every rank's
    batch (with gradients) and ``pred`` stays local; each rank draws its own slices, as lightly's.
    """

    def __init__(
        self,
        lambda_param: float = 0.9,
        num_slices: int = 4096,
        lambda_scale: float = 1.0,
        lambda_shape: float = 1.0,
        lambda_center: float = 1.0,
        gather_distributed: bool = False,
        eps: float = 1e-4,
        *,
        backend: Optional[str] = None,
    ):
        super().__init__()
        _check_weight(lambda_param, "lambda_param", unit=True)
        weights = {"lambda_scale": lambda_scale, "lambda_shape": lambda_shape, "lambda_center": lambda_center}
        for name, value in weights.items():
            _check_weight(value, name)
        check_number(eps, "eps", 0.0, low_open=True)
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"gather_distributed must be a bool, got {type(gather_distributed).__name__}")
        check_backend(backend)
        self.lambda_param, self.num_slices = lambda_param, as_int(num_slices, "num_slices", 1)
        self.lambda_scale, self.lambda_shape, self.lambda_center = lambda_scale, lambda_shape, lambda_center
        self.gather_distributed, self.eps, self.backend = gather_distributed, eps, backend

    def forward(self, *, local_proj: Tensor, global_proj: Tensor) -> Tensor:
        return self.forward_components(local_proj=local_proj, global_proj=global_proj).total

    def forward_components(self, *, local_proj: Tensor, global_proj: Tensor) -> VISRegLossComponents:
        _check_views(local_proj, global_proj, 2)
        joined = torch.cat([global_proj, local_proj], dim=0)
        dtype = joined.dtype
        # the directions are lightly's draw in the input's dtype; the arithmetic is float32 for 16-bit input
        proj = joined.to(torch.promote_types(dtype, torch.float32))
        pred = lejepa_invariance_loss(all_proj=proj, global_proj=proj[: global_proj.shape[0]])
        if _gathering(self.gather_distributed):
            proj = all_gather_batch(proj)
        a = _unit_columns(proj.shape[-1], self.num_slices, joined)
        scale, center = visreg_scale_loss(proj), visreg_center_loss(proj)
        shape = _shape(proj, a, self.eps, self.backend)
        reg = self.lambda_scale * scale + self.lambda_shape * shape + self.lambda_center * center
        total = (1.0 - self.lambda_param) * pred + self.lambda_param * reg
        return VISRegLossComponents(*(t.to(dtype) for t in (total, pred, scale, shape, center)))

    def extra_repr(self) -> str:
        return (
            f"lambda_param={self.lambda_param}, num_slices={self.num_slices}, lambda_scale={self.lambda_scale}, "
            f"lambda_shape={self.lambda_shape}, lambda_center={self.lambda_center}, "
            f"gather_distributed={self.gather_distributed}, eps={self.eps}"
        )
