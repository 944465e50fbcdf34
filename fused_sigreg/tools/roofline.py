"""GPU floor of one forward + backward of an op's CUDA path as built (docs/design.md §8): an estimate from
vendor peak rates (datasheet numbers, SXM parts), the instruction counts ``compile-check`` measures and a
count of the work. The path's kernels run one after another, so the floor is the sum of its terms:

- ``projection``: the GEMMs, each the larger of its FLOPs at the precision the path uses and its operands'
  HBM bytes. P = X A: SIGReg's 16-bit input in its dtype on tensor cores (mm's out_dtype), everything else
  in float32 as the reference (tf32 where torch's matmul setting allows it); dX = dP A^T in float32/tf32;
  RDMReg also projects its target samples.
- ``passes``: the passes over P. SIGReg's ECF sums (forward) and dP (backward), each the larger of its
  instructions at the CUDA cores' issue rate and P's bytes; the instructions are compile-check's static
  SASS per element and per knot (sm_90, triton 3.8), which count libdevice's never-taken large-argument
  paths, so they overstate what issues by a little. The sort ops' sort-and-match: its bytes (P read,
  (key, row) pairs written and read, the gradient written and read).
- ``launches``: the path's kernels per fwd+bwd (the lean-path test's ratchet, ``KERNELS_PER_CALL``) times
  LAUNCH_SECONDS, a dependent kernel's launch-to-launch time on the GPU.

Host time (Python, the dispatcher, autograd: ~0.2 ms per fwd+bwd on the development machine,
``benchmarks/host_time.py``) is not in the floor: a CUDA graph removes it.
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

# Static SASS per element of P and per knot of the ECF passes, (outside the knot loop, per knot):
# ``python -m fused_sigreg compile-check`` on sm_90 with triton 3.8 (docs/kernels.md, "Instructions").
ECF_SASS = {"forward": (219.5, 7.0), "backward": (229.2, 7.4)}
# a restart of the knot recurrence: one more cos/sin pair (two libdevice calls, ~84 SASS on sm_90)
SINCOS_INSTRUCTIONS = 84
RESEED = 16  # the kernels' restart interval (kernels/sigreg_fused.py, csrc/sigreg_cpu.cpp)
# Kernels per fwd+bwd of each op's CUDA path with directions given, (float32, 16-bit input): the ratchet
# tests/test_lean_path.py holds the triton backend's Python path to (lower both as the path gets leaner).
KERNELS_PER_CALL = {"sigreg": (6, 8), "sliced_wasserstein": (7, 9), "visreg": (12, 14), "rdmreg": (8, 10)}
# A dependent kernel's launch-to-launch time on the GPU (launch latency, ramp and tail): an estimate of
# ~3 us for an H100-class part, not measured here.
LAUNCH_SECONDS = 3e-6


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


def ecf_instructions(V: int, N: int, K: int, T: int) -> Dict[str, int]:
    """SASS instructions of SIGReg's forward and backward ECF passes over P (V, N, K) at T knots."""
    extra = SINCOS_INSTRUCTIONS * ecf_restarts(T)
    return {name: int(V * N * K * (per_elem + extra + T * per_knot)) for name, (per_elem, per_knot) in ECF_SASS.items()}


def projection_seconds(V, N, D, K, dtype, allow_tf32, peaks: Dict[str, float], op: str = "sigreg") -> float:
    """The path's GEMMs in sequence, each max(FLOPs at its precision, its operands' HBM bytes)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    fp32 = precision_key(torch.float32, allow_tf32)
    forward = precision_key(dtype, allow_tf32) if op == "sigreg" else fp32
    flops = 2 * V * N * D * K
    gemm = lambda rate, in_bytes: max(flops / peaks[rate], (in_bytes + 4 * V * N * K) / peaks["hbm"])  # noqa: E731
    total = gemm(forward, itemsize * V * N * D + 4 * D * K)  # P = X A
    total += gemm(fp32, 4 * (V * N * D + D * K))  # dX = dP A^T (dX written, counted as dP's size)
    if op == "rdmreg":
        total += gemm(fp32, itemsize * V * N * D + 4 * D * K)  # the target samples' projections
    return total


def passes_seconds(op, V, N, K, T, peaks: Dict[str, float]) -> float:
    """The passes over P in sequence: SIGReg's ECF passes (instructions or bytes), the sort ops' sort."""
    p_bytes = 4 * V * N * K
    if op == "sigreg":
        issue_rate = peaks["fp32"] / 2  # instructions per second: an FMA is one instruction and 2 FLOPs
        work = ecf_instructions(V, N, K, T)
        forward = max(work["forward"] / issue_rate, p_bytes / peaks["hbm"])
        backward = max(work["backward"] / issue_rate, 2 * p_bytes / peaks["hbm"])  # dP written over P
        return forward + backward
    sorts = 2 if op == "rdmreg" else 1
    return sorts * (p_bytes + 2 * 8 * V * N * K + 2 * p_bytes) / peaks["hbm"]


def floor_seconds(op, V, N, D, K, T, dtype, allow_tf32, device_name: str) -> Optional[Dict[str, float]]:
    """Each term of the floor in seconds (``projection``, ``passes``, ``launches``), or None for a GPU
    without a peak table. The floor is their sum."""
    peaks = device_peaks(device_name)
    if peaks is None:
        return None
    kernels = KERNELS_PER_CALL[op][0 if dtype == torch.float32 else 1]
    return {
        "projection": projection_seconds(V, N, D, K, dtype, allow_tf32, peaks, op),
        "passes": passes_seconds(op, V, N, K, T, peaks),
        "launches": kernels * LAUNCH_SECONDS,
    }


def roofline(op, V, N, D, K, T, dtype, allow_tf32, seconds: float, device_name: str) -> Dict[str, object]:
    """Projection TFLOP/s, the floor (ms, the sum of its terms) with the largest term, and the fraction of
    the floor reached (floor / measured time)."""
    out = {"TFLOPs": round(projection_flops(V, N, D, K, op) / seconds / 1e12, 2)}
    terms = floor_seconds(op, V, N, D, K, T, dtype, allow_tf32, device_name)
    if terms is None:
        out["roofline_frac"] = "unknown GPU"
        return out
    floor = sum(terms.values())
    out["floor_ms"] = round(floor * 1e3, 4)
    out["floor_bound"] = max(terms, key=terms.get)
    out["roofline_frac"] = round(floor / seconds, 3)
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
