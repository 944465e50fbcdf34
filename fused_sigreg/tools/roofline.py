"""GPU roofline of one forward + backward (docs/design.md §8): the floor is the largest of three times,
each an estimate from vendor peak rates (datasheet numbers, SXM parts) and a count of the work:

- tensor cores: the useful projection matmuls (P = X A forward, dX = dP A^T backward; RDMReg also
  projects its target samples);
- HBM: the bytes any implementation must move (X read twice, dX written, A, the (V, K, T) means; the
  sort ops also write and read P and make one pass of (key, row) pairs for the sort);
- CUDA cores: SIGReg's ECF work, counted in fp32 instructions per element (``ecf_instructions``). At
  T = 17 it exceeds the tensor-core time, so a floor without it would flatter the kernels. The sort ops
  have no ALU term: a radix sort's work is bounded by its memory passes, counted in the HBM term.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

# peak dense matmul FLOP/s by operand precision, non-tensor fp32 FLOP/s (an FMA counts 2), HBM bytes/s
PEAKS = {
    "H200": dict(bf16=989e12, fp16=989e12, tf32=494e12, fp32=67e12, hbm=4.8e12),
    "H100": dict(bf16=989e12, fp16=989e12, tf32=494e12, fp32=67e12, hbm=3.35e12),
    "A100": dict(bf16=312e12, fp16=312e12, tf32=156e12, fp32=19.5e12, hbm=2.0e12),
}

# fp32 instructions (an FMA is one) of one sin/cos pair: Cody-Waite reduction (3 FMAs), two minimax
# polynomials (~10), quadrant selection and the range check (~10), rounded up.
SINCOS_INSTRUCTIONS = 24
# per element and knot: the recurrence (2 multiplies + 2 FMAs) and 2 accumulations (forward: the cos and
# sin sums; backward: the dP terms)
KNOT_INSTRUCTIONS = 6
RESEED = 16  # the kernels' restart interval (kernels/sigreg_fused.py, csrc/sigreg_cpu.cpp)


def device_peaks(device_name: str) -> Optional[Dict[str, float]]:
    for key, peaks in PEAKS.items():  # H200 before H100: "H100" is not a substring of "H200"
        if key in device_name:
            return peaks
    return None


def precision_key(dtype: torch.dtype, allow_tf32: bool) -> str:
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16" if dtype == torch.bfloat16 else "fp16"
    return "tf32" if allow_tf32 else "fp32"


def projection_flops(V: int, N: int, D: int, K: int, op: str = "sigreg") -> int:
    """Useful FLOPs of forward + backward: P = X A and dX = dP A^T (a recompute of P is not counted);
    RDMReg also projects its target samples (forward only)."""
    passes = 3 if op == "rdmreg" else 2
    return 2 * passes * V * N * D * K


def ecf_restarts(T: int) -> int:
    """Recurrence restarts per element and pass: at knots RESEED, 2 RESEED, ... but never the last."""
    return max(0, (T - 2) // RESEED)


def ecf_instructions(V: int, N: int, K: int, T: int) -> int:
    """fp32 instructions of SIGReg's forward and backward ECF passes: per element and pass one sin/cos
    pair (plus one per restart) and T knot steps."""
    per_pass = T * KNOT_INSTRUCTIONS + SINCOS_INSTRUCTIONS * (1 + ecf_restarts(T))
    return 2 * V * N * K * per_pass


def min_bytes(V: int, N: int, D: int, K: int, T: int, itemsize: int, op: str = "sigreg") -> int:
    """Bytes any fwd + bwd must move: read X twice, write dX, read A twice, the (V, K, T) means; the sort
    ops write and read P (fp32) and read and write (key, row) pairs once for the sort (RDMReg twice, and
    it reads its target samples)."""
    total = itemsize * 3 * V * N * D + 4 * 2 * D * K
    if op == "sigreg":
        return total + 4 * 4 * V * K * T
    sorts = 2 if op == "rdmreg" else 1
    total += sorts * (4 * 2 * V * N * K + 8 * 2 * V * N * K)
    if op == "rdmreg":
        total += itemsize * V * N * D
    return total


def floor_seconds(op, V, N, D, K, T, dtype, allow_tf32, device_name: str) -> Optional[Dict[str, float]]:
    """Each term of the floor in seconds (``tensor_core``, ``hbm``, ``cuda_core``), or None for a GPU
    without a peak table."""
    peaks = device_peaks(device_name)
    if peaks is None:
        return None
    itemsize = torch.empty((), dtype=dtype).element_size()
    return {
        "tensor_core": projection_flops(V, N, D, K, op) / peaks[precision_key(dtype, allow_tf32)],
        "hbm": min_bytes(V, N, D, K, T, itemsize, op) / peaks["hbm"],
        "cuda_core": ecf_instructions(V, N, K, T) / (peaks["fp32"] / 2) if op == "sigreg" else 0.0,
    }


def roofline(op, V, N, D, K, T, dtype, allow_tf32, seconds: float, device_name: str) -> Dict[str, object]:
    """Projection TFLOP/s, the floor (ms) with the term that sets it, and the fraction of the floor
    reached (floor / measured time)."""
    out = {"TFLOPs": round(projection_flops(V, N, D, K, op) / seconds / 1e12, 2)}
    terms = floor_seconds(op, V, N, D, K, T, dtype, allow_tf32, device_name)
    if terms is None:
        out["roofline_frac"] = "unknown GPU"
        return out
    bound = max(terms, key=terms.get)
    out["floor_ms"] = round(terms[bound] * 1e3, 4)
    out["floor_bound"] = bound
    out["roofline_frac"] = round(terms[bound] / seconds, 3)
    return out


def fused_forward_operand_bytes(
    V: int,
    N: int,
    D: int,
    K: int,
    itemsize: int,
    block_n: int = 32,
    block_k: int = 128,
    resident_programs: int = 2 * 132,
    l2_bytes: int = 50 * 10**6,
) -> Dict[str, int]:
    """Estimated HBM bytes the fully fused SIGReg forward reads for its dot operands x (V, N, D) and
    A^T (K, D), for two program orders (an estimate for the kernel-design record, not timed):

    - ``row_tiles_fastest``, the kernel's order: the resident programs cover one column tile over many
      row tiles, so each column tile re-reads a view's x from HBM unless that fits in L2, and each
      A^T slice is read once per view;
    - ``grouped``: resident programs cover a square window of ~sqrt(resident_programs * block_n *
      block_k) rows and slices, so x is read once and A^T once per window of rows (unless A^T fits in L2).
    Defaults: the large forward tile, two programs per SM on 132 SMs, an H100's 50 MB L2."""
    x_view, a_t = N * D * itemsize, K * D * itemsize
    column_tiles = -(-K // block_k)
    x_reads = column_tiles if x_view > l2_bytes else 1
    window_rows = max(block_n, int((resident_programs * block_n * block_k) ** 0.5))
    a_reads = -(-N // window_rows) if a_t > l2_bytes else 1
    return {
        "row_tiles_fastest": V * (x_view * x_reads + a_t),
        "grouped": V * (x_view + a_t * a_reads),
    }
