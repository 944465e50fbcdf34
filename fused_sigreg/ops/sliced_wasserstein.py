"""Sliced Wasserstein distance of the embeddings' marginals to N(0, 1) (VISReg's SWD)."""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..distributed import all_gather_batch
from ..slicing import shared_normal_quantiles
from ..validation import as_int, check_number
from .common import StepCounter, autocast_off, check_backend, check_input, flatten_views, resolve_directions

DEFAULT_NUM_PROJECTIONS = 256


def prepare_quantile_matching(
    x, name, num_projections, directions, projections, generator, quantile_clamp, gather, check_finite
):
    """Checked, flattened to (N, D) / (V, N, D), (gathered) input, (D, K) directions and the (N,)
    N(0,1) quantile target."""
    check_input(x, name, check_finite)
    if quantile_clamp is not None:
        check_number(quantile_clamp, "quantile_clamp", 0.0, 0.5, low_open=True)
    w = resolve_directions(
        x,
        num_projections,
        DEFAULT_NUM_PROJECTIONS,
        directions,
        None,
        generator,
        "num_projections",
        check_finite,
        projections,
    )
    x = flatten_views(x)
    if gather:
        x = all_gather_batch(x)
    return x, w, shared_normal_quantiles(x.shape[-2], quantile_clamp, device=x.device)


@autocast_off
def sliced_wasserstein(
    x: torch.Tensor,
    num_projections: Optional[int] = None,
    directions: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    quantile_clamp: Optional[float] = None,
    gather: bool = False,
    backend: Optional[str] = None,
    check_finite: bool = False,
    projections: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """mean over (*, N, K) of (sort_N(x W) - q)^2, q_i the N(0,1) quantile at i/(N+1).

    Args:
        x: (*, N, D), any float dtype; leading indices are views sharing the directions. N >= 1
            (at N = 1 the target is the median 0: the loss is the mean square projection).
        num_projections: K (default 256, or the number of directions given).
        directions: explicit (D, K) directions, or ``projections`` (K, D) the same transposed;
            ``generator``: draw them from it instead; with none, torch's global RNG draws them.
        quantile_clamp: None for sqrt(2) erfinv(2i/(N+1) - 1) (VISReg's shape target); c clips the
            levels to [c, 1 - c] first (VISReg's SWD baseline uses 1e-4).
        gather: all-gather the batch over ranks first (with gradients), as the VISReg trainer does.
    Returns: a float32 scalar (float64 for float64 x).
    """
    x, w, target = prepare_quantile_matching(
        x, "x", num_projections, directions, projections, generator, quantile_clamp, gather, check_finite
    )
    return dispatch.run("sliced_wasserstein", (x, w), backend, x, w, target)


class SlicedWasserstein(StepCounter):
    """VISReg's ``SlicedWasserstein(num_projections)`` baseline (clamped quantiles) on (*, N, D).

    Each call draws fresh directions from a generator seeded with ``global_step`` (``StepCounter``),
    or from ``generator`` when one is passed; torch's global RNG is never touched. The VISReg
    repository's exact module (same RNG use, same signature) is ``fused_sigreg.compat.visreg``.
    """

    def __init__(
        self,
        num_projections: int = DEFAULT_NUM_PROJECTIONS,
        quantile_clamp: Optional[float] = 1e-4,
        gather: bool = False,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.num_projections = as_int(num_projections, "num_projections", 1)
        if quantile_clamp is not None:
            check_number(quantile_clamp, "quantile_clamp", 0.0, 0.5, low_open=True)
        check_backend(backend)
        self.quantile_clamp, self.gather, self.backend = quantile_clamp, gather, backend

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        check_input(x, "x", False)
        directions, _ = self.draw(x, self.num_projections, generator)
        return sliced_wasserstein(
            x, directions=directions, quantile_clamp=self.quantile_clamp, gather=self.gather, backend=self.backend
        )
