"""GPU roofline of the projection work (docs/design.md §8): useful matmul FLOPs and bytes per op, and
the dense peak rates of the GPUs we report on (vendor datasheet numbers, SXM parts)."""

from __future__ import annotations

from typing import Dict, Optional

import torch

# peak dense matmul FLOP/s by operand precision, and HBM bytes/s
PEAKS = {
    "H200": dict(bf16=989e12, fp16=989e12, tf32=494e12, fp32=67e12, hbm=4.8e12),
    "H100": dict(bf16=989e12, fp16=989e12, tf32=494e12, fp32=67e12, hbm=3.35e12),
    "A100": dict(bf16=312e12, fp16=312e12, tf32=156e12, fp32=19.5e12, hbm=2.0e12),
}


def device_peaks(device_name: str) -> Optional[Dict[str, float]]:
    for key, peaks in PEAKS.items():  # H200 before H100: "H100" is not a substring of "H200"
        if key in device_name:
            return peaks
    return None


def precision_key(dtype: torch.dtype, allow_tf32: bool) -> str:
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16" if dtype == torch.bfloat16 else "fp16"
    return "tf32" if allow_tf32 else "fp32"


def projection_flops(V: int, N: int, D: int, K: int) -> int:
    """Useful FLOPs of forward + backward: P = X A and dX = dP A^T (a recompute of P is not counted)."""
    return 2 * 2 * V * N * D * K


def min_bytes(V: int, N: int, D: int, K: int, T: int, itemsize: int) -> int:
    """Bytes any fwd + bwd must move: read X twice, write dX, read A twice, the (V, K, T) means."""
    return itemsize * 3 * V * N * D + 4 * 2 * D * K + 4 * 4 * V * K * T


def roofline(V, N, D, K, T, dtype, allow_tf32, seconds: float, device_name: str) -> Dict[str, object]:
    """Projection TFLOP/s and the fraction of the roofline floor reached (floor / measured time)."""
    flops = projection_flops(V, N, D, K)
    out = {"TFLOPs": round(flops / seconds / 1e12, 2)}
    peaks = device_peaks(device_name)
    if peaks is None:
        out["roofline_frac"] = "unknown GPU"
        return out
    floor = max(
        flops / peaks[precision_key(dtype, allow_tf32)],
        min_bytes(V, N, D, K, T, torch.empty((), dtype=dtype).element_size()) / peaks["hbm"],
    )
    out["roofline_frac"] = round(floor / seconds, 3)
    return out
