"""SIGReg's ECF stage on the compiled CPU extension: ``fused_sigreg::ecf_sums`` and ``ecf_grad_``
(``csrc/sigreg_cpu.cpp``) as the passes of ``backends/ecf_passes.py`` (P stored, dP written over it)."""

from __future__ import annotations

import torch

from ..ecf_passes import EcfPasses, make_ecf_means

_PASSES = EcfPasses(
    name="the cpu backend",
    sums=lambda proj, delta, n_points: torch.ops.fused_sigreg.ecf_sums(proj, delta, n_points),
    grad=lambda proj, coef, delta: torch.ops.fused_sigreg.ecf_grad(proj, coef, delta),
    grad_=lambda proj, coef, delta: torch.ops.fused_sigreg.ecf_grad_(proj, coef, delta),
)

STAGES = {"ecf_means": make_ecf_means(_PASSES)}  # what the dispatcher's cpu backend calls
