"""Analytic memory accounting of SIGReg per backend (float32), checked against measurements at
small sizes (tests) and used to report sizes too large to run on the machine at hand
(``python -m fused_sigreg memory``)."""

from __future__ import annotations


def sigreg_saved_extra_bytes(backend: str, V: int, N: int, K: int, T: int) -> int:
    """Bytes saved for backward beyond the inputs x and directions.

    Both backends share the eager loss stage, which keeps (cos_mean - phi) and sin_mean, (V, K, T)
    each, and the weights (T). The eager ECF stage also keeps the (V, N, K, T) argument of cos/sin
    and the knots (T); the fused op keeps nothing but its inputs.
    """
    loss_stage = 4 * (2 * V * K * T + T)
    if backend == "eager":
        return 4 * V * N * K * T + 4 * T + loss_stage
    return loss_stage


def sigreg_peak_extra_bytes_model(backend: str, V: int, N: int, D: int, K: int, T: int, block_n: int = 64) -> int:
    """Dominant terms of the peak extra memory of one forward + backward.

    eager: six (V, N, K, T) float32 tensors are alive at the peak (argument, cos, sin and their
    gradients); measured 6.0x at every size tried. fused: the per-row-tile partial sums
    (V, ceil(N / block_n), 2, T, K), a few (V, K, T) tensors, and the fp32 dX plus x.grad (V, N, D).
    """
    if backend == "eager":
        return 6 * 4 * V * N * K * T
    row_tiles = -(-N // block_n)
    return 4 * (V * row_tiles * 2 * T * K + 6 * V * K * T + 2 * V * N * D)
