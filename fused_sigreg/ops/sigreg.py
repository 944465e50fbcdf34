"""SIGReg (LeJEPA): the sliced Epps–Pulley test of N(0, 1) marginals.

On one batch (no torch.distributed, or sync=False) a backend's ``sigreg_stats`` stage returns the
statistic per slice: on cpu and triton one op computes the knot sums and the statistic, and its
backward the dP pass (docs/design.md §5). Under torch.distributed with sync=True the backend computes
the ECF means (..., K, T) and the statistic is formed here in eager with the average over ranks in
between, so every backend shares the distributed semantics.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..distributed import all_reduce_mean, check_ranks_agree, dtype_code, world_size
from ..reference import clip_statistics, epps_pulley_from_ecf, reduce_statistics
from ..slicing import shared_quadrature
from ..validation import as_int, check_memory, check_number, check_quadrature, check_reduction
from .common import StepCounter, autocast_off, check_backend, check_input, flatten_views, resolve_directions

DEFAULT_NUM_SLICES = 256


@autocast_off
def sigreg(
    x: torch.Tensor,
    num_slices: Optional[int] = None,
    t_max: float = 3.0,
    n_points: int = 17,
    step: Optional[int] = None,
    directions: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    reduction: Optional[str] = "mean",
    clip_value: Optional[float] = None,
    backend: Optional[str] = None,
    check_finite: bool = False,
    projections: Optional[torch.Tensor] = None,
    sync: bool = True,
    memory: str = "auto",
) -> torch.Tensor:
    """SIGReg statistic of embeddings x along K random directions (LeJEPA, Balestriero & LeCun 2025).

    Args:
        x: (*, N, D), any float dtype; every leading index is a view and views share directions. N >= 1.
        num_slices: K (default 256, or the number of directions given).
        t_max, n_points: quadrature on [0, t_max]; (3, 17) is lejepa's default, (5, 9) the paper's Algorithm 1.
        step: draw lejepa's directions for this step (``SlicingUnivariateTest`` with ``global_step=step``);
            synchronised to the maximum over ranks under torch.distributed.
        directions: explicit (D, K) directions, used as given; or ``projections`` (K, D), the same transposed.
        generator: draw directions from this generator instead (on x's device). With none of
            directions / projections / step / generator, torch's global RNG draws them (and advances).
        reduction: "mean" / "sum" over (*, K), or None for per-slice statistics (*, K).
        clip_value: statistics below it count as 0 (lejepa's ``clip_value``).
        backend: "auto", "eager", "triton", "cuda" or "cpu"; None reads $FUSED_SIGREG_BACKEND (default auto).
        check_finite: raise ValueError on NaN/inf in x instead of propagating them like the reference.
        sync: under torch.distributed, average the ECF over ranks and scale by the global batch (lejepa);
            False keeps each rank's statistic on its own batch (the VISReg repository's SIGReg).
        memory: "auto": the triton and cpu backends keep the projections P (V*N*K*4 bytes) for backward,
            the triton backend switching to its fully fused kernel when P would not fit (docs/kernels.md);
            "min": the fully fused Triton kernel, which keeps nothing of size N*K (CUDA tensors, backend
            "auto" or "triton"; any other backend raises).

    Returns:
        float32 statistics (float64 for float64 x): a scalar, or (*, K) for reduction=None.
        Each slice's statistic is N_global * sum_j w_j |ECF(t_j) - exp(-t_j^2/2)|^2.
    """
    check_input(x, "x", check_finite)
    check_quadrature(t_max, n_points)
    check_reduction(reduction)
    check_memory(memory)
    if clip_value is not None:
        check_number(clip_value, "clip_value")
    n_points = int(n_points)
    a = resolve_directions(
        x, num_slices, DEFAULT_NUM_SLICES, directions, step, generator, "num_slices", check_finite, projections
    )
    lead = x.shape[:-2]
    x = flatten_views(x)
    if _across_ranks(sync):
        stats = _synced_stats(x, a, float(t_max), n_points, backend, memory)
    elif memory == "auto" and clip_value is None and reduction is not None:
        # one batch, reduced: the backend forms and reduces the statistic itself (cpu / triton: inside
        # its ECF op, whose backward's dP pass takes the reduction's gradient as it is: no kernel for it)
        return dispatch.run("sigreg_stats", (x, a), backend, x, a, float(t_max), n_points, reduction)
    elif memory == "auto":
        # one batch: the backend forms the statistic itself (cpu / triton: inside its ECF op, whose
        # backward builds the knot coefficients), no eager step between ECF and statistic
        stats = dispatch.run("sigreg_stats", (x, a), backend, x, a, float(t_max), n_points)
    else:
        cos_mean, sin_mean = _ecf_means(x, a, float(t_max), n_points, backend, memory)
        quad = shared_quadrature(float(t_max), n_points, device=x.device)
        stats = epps_pulley_from_ecf(cos_mean, sin_mean, quad, x.shape[-2])
    if reduction is None and len(lead) > 1:
        stats = stats.reshape(*lead, stats.shape[-1])
    return reduce_statistics(clip_statistics(stats, clip_value), reduction)


def _across_ranks(sync: bool) -> bool:
    """Whether the statistic averages the ECF over ranks (lejepa under torch.distributed): the two-stage path."""
    return sync and world_size() > 1


def _synced_stats(x, a, t_max, n_points, backend, memory):
    """lejepa's statistic under torch.distributed: the ECF averaged over ranks, scaled by the global batch."""
    cos_mean, sin_mean = _ecf_means(x, a, t_max, n_points, backend, memory)
    check_ranks_agree(
        x.device,
        "SIGReg's all_reduce of the ECF (sync=True)",
        num_slices=a.shape[-1],
        n_points=n_points,
        **{"the view count": cos_mean.shape[:-2].numel(), "D": x.shape[-1], "the input dtype": dtype_code(x.dtype)},
    )
    cos_mean, sin_mean = all_reduce_mean(cos_mean), all_reduce_mean(sin_mean)
    quad = shared_quadrature(t_max, n_points, device=x.device)
    return epps_pulley_from_ecf(cos_mean, sin_mean, quad, x.shape[-2] * world_size())


def _ecf_means(x, a, t_max, n_points, backend, memory):
    if memory == "auto":
        return dispatch.run("ecf_means", (x, a), backend, x, a, t_max, n_points)
    try:
        return dispatch.run("ecf_means_min", (x, a), backend, x, a, t_max, n_points)
    except dispatch.BackendUnavailableError as e:
        raise dispatch.BackendUnavailableError(
            f"sigreg(memory='min') runs the fully fused Triton kernel (CUDA tensors, backend 'auto' or 'triton'), "
            f"which cannot serve this call ({e}); use memory='auto'"
        ) from e


class SIGReg(StepCounter):
    """Drop-in for lejepa's ``SlicingUnivariateTest(EppsPulley(t_max, n_points), num_slices)``.

    Holds a ``global_step`` buffer: each call draws the directions of that step (synchronised
    across ranks) and then increments it, exactly like lejepa, so runs are reproducible and torch's
    global RNG is never touched. Its state_dict is ``global_step`` alone; to load or write lejepa's
    checkpoints (which add ``univariate_test.{t, phi, weights}``) use ``fused_sigreg.compat.lejepa``.
    """

    def __init__(
        self,
        num_slices: int = DEFAULT_NUM_SLICES,
        t_max: float = 3.0,
        n_points: int = 17,
        reduction: Optional[str] = "mean",
        clip_value: Optional[float] = None,
        backend: Optional[str] = None,
        memory: str = "auto",
    ):
        super().__init__()
        check_quadrature(t_max, n_points)
        check_reduction(reduction)
        check_memory(memory)
        if clip_value is not None:
            check_number(clip_value, "clip_value")
        check_backend(backend)
        self.num_slices = as_int(num_slices, "num_slices", 1)
        self.t_max, self.n_points = float(t_max), int(n_points)
        self.reduction, self.clip_value, self.backend, self.memory = reduction, clip_value, backend, memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", False)
        directions, _ = self.draw(x, self.num_slices, lejepa=True)
        return sigreg(
            x,
            t_max=self.t_max,
            n_points=self.n_points,
            directions=directions,
            reduction=self.reduction,
            clip_value=self.clip_value,
            backend=self.backend,
            memory=self.memory,
        )

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, t_max={self.t_max}, n_points={self.n_points}, reduction={self.reduction!r}"
        )
