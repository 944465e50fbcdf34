"""SIGReg's stages on the compiled CPU extension: ``fused_sigreg::ecf_sums``, ``ecf_stat`` and ``ecf_grad_``
(``csrc/sigreg_cpu.cpp``) as the passes of ``backends/ecf_passes.py`` (P stored, dP written over it)."""

from __future__ import annotations

import torch

from ..ecf_passes import EcfPasses, make_ecf_means, make_sigreg_stats

_PASSES = EcfPasses(
    name="the cpu backend",
    sums=lambda proj, delta, n_points: torch.ops.fused_sigreg.ecf_sums(proj, delta, n_points),
    stat=lambda proj, delta, t, phi, weights: torch.ops.fused_sigreg.ecf_stat(proj, delta, t, phi, weights),
    grad=lambda proj, coef, delta: torch.ops.fused_sigreg.ecf_grad(proj, coef, delta),
    grad_=lambda proj, coef, delta: torch.ops.fused_sigreg.ecf_grad_(proj, coef, delta),
)

# what the dispatcher's cpu backend calls
STAGES = {"ecf_means": make_ecf_means(_PASSES), "sigreg_stats": make_sigreg_stats(_PASSES)}
