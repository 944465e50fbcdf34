"""SIGReg's stages on the compiled CPU extension: ``fused_sigreg::ecf_sums``, ``ecf_stat`` and ``ecf_grad_``
(``csrc/sigreg_cpu.cpp``) as the passes of ``backends/ecf_passes.py`` (P stored, dP written over it)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ecf_passes import EcfPasses, make_ecf_means, make_sigreg_stats


def _scaled(coef: torch.Tensor, scale: Optional[torch.Tensor], alpha: float) -> torch.Tensor:
    """coef (V, 2, T, K) times alpha and the per-slice scale (V, K): the C++ pass takes the product."""
    return coef if scale is None else coef * (scale * alpha)[:, None, None, :]


_PASSES = EcfPasses(
    name="the cpu backend",
    sums=lambda proj, delta, n_points: torch.ops.fused_sigreg.ecf_sums(proj, delta, n_points),
    stat=lambda proj, delta, t, phi, weights: torch.ops.fused_sigreg.ecf_stat(proj, delta, t, phi, weights),
    grad=lambda proj, coef, delta, scale=None, alpha=1.0: torch.ops.fused_sigreg.ecf_grad(
        proj, _scaled(coef, scale, alpha), delta
    ),
    grad_=lambda proj, coef, delta, scale=None, alpha=1.0: torch.ops.fused_sigreg.ecf_grad_(
        proj, _scaled(coef, scale, alpha), delta
    ),
)

# what the dispatcher's cpu backend calls
STAGES = {"ecf_means": make_ecf_means(_PASSES), "sigreg_stats": make_sigreg_stats(_PASSES)}
