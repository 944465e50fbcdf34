"""Analytic memory accounting of SIGReg (float32) per way of computing it, checked against
measurements at small sizes (tests) and used to report sizes too large to run on the machine at hand
(``python -m fused_sigreg memory``). The ways:

- ``"eager"``: the reference (and ``torch.compile`` of it keeps the same argument);
- ``"P"``: the passes over stored projections, the cpu backend and the triton backend's default
  (``memory="auto"``);
- ``"min"``: the fully fused Triton kernel (``memory="min"``).
"""

from __future__ import annotations

VARIANTS = ("eager", "P", "min")


def _check(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def sigreg_saved_extra_bytes(variant: str, V: int, N: int, K: int, T: int) -> int:
    """Bytes saved for backward beyond the inputs x and directions.

    On one batch (no average over ranks). "eager" and "min" end in the eager loss stage, which keeps
    (cos_mean - phi) and sin_mean, (V, K, T) each, and the weights (T); the eager ECF stage also keeps
    the (V, N, K, T) argument of cos/sin and the knots (T). "P" keeps the projections (V, N, K) and the
    coefficients of the statistic's derivative (V, 2, T, K) that its ECF-and-statistic op returns.
    """
    _check(variant)
    loss_stage = 4 * (2 * V * K * T + T)
    if variant == "eager":
        return 4 * V * N * K * T + 4 * T + loss_stage
    if variant == "P":
        return 4 * V * N * K + 4 * 2 * V * K * T
    return loss_stage


def sigreg_peak_extra_bytes_model(variant: str, V: int, N: int, D: int, K: int, T: int, partial_bytes: int = 0) -> int:
    """Dominant terms of the peak extra memory of one forward + backward.

    eager: six (V, N, K, T) float32 tensors are alive at the peak (argument, cos, sin and their
    gradients); measured 6.0x at every size tried. "P": P (dP written over it), the forward's partial
    sums (``partial_bytes``: fp64 over a bounded number of row splits on Triton, none on CPU) and their
    fp64 and fp32 reductions, a few (V, K, T) tensors, dX and x.grad. "min": the same without P, plus
    the forward's transposed copy of the directions (K, D).
    """
    _check(variant)
    if variant == "eager":
        return 6 * 4 * V * N * K * T
    stored_p = V * N * K if variant == "P" else 0
    directions_t = D * K if variant == "min" else 0
    return 4 * (stored_p + 12 * V * K * T + 2 * V * N * D + directions_t) + partial_bytes
