"""What the Triton backend may launch, and the run-time settings it reads; importable without triton.

The config tables are the only ones the launchers pick from, and ``tools/compile_check.py`` compiles
every one of them ahead of time for sm_80 and sm_90 (``CompileSpec``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict

import torch


def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors in Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# newer torch has the fp32_precision settings; older torch only allow_tf32
NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


def fp32_matmul_uses_tf32() -> bool:
    """Whether fp32 matmuls may use tf32, as the user set it through either of torch's APIs.

    ``torch.backends.cuda.matmul.fp32_precision`` (newer torch) resolves the global
    ``torch.backends.fp32_precision`` and mirrors the legacy ``allow_tf32``; reading the legacy flag
    after the new API was used raises in torch, so the new one is read wherever it exists."""
    if NEW_TF32_API:
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


# ------------------------------------------------------------------------------------- SIGReg

# Knots between restarts of the angle-addition recurrence from the knot's own sin/cos; the CPU
# kernel (csrc/sigreg_cpu.cpp kReseed) and tools/numerics.py use the same interval.
RESEED = 16


@dataclass(frozen=True)
class KernelConfig:
    block_n: int
    block_k: int
    block_d: int
    num_warps: int

    def constexprs(self) -> dict:
        return dict(BLOCK_N=self.block_n, BLOCK_K=self.block_k, BLOCK_D=self.block_d)


# Chosen from ptxas reports (``compile-check``). The forward computes its tile transposed, columns by
# rows (kernels/sigreg_fused.py), so BLOCK_K is the MMA's M: at 128 with 8 warps (16 M-rows per warp) no
# two warps share a column and the per-knot sum over the BLOCK_N = 32 rows needs no cross-warp
# reduction (64 x 64 with 8 warps summed across warps and lanes at every knot; 64 x 128 spills in fp32
# without tf32). The small forward tile is spill-free with D a multiple of 16 or not; 32 x 32 x 32 with
# 4 warps spills 8-16 bytes on sm_90 once D is. The backward holds more live tiles (recurrence, its
# restart angle, dP, the dX dot over BLOCK_K) and stays spill-free in every variant, on every supported
# triton, only with BLOCK_K = BLOCK_D = 16, and at BLOCK_N = 64 with 8 warps (4 warps spill 24 bytes
# in fp32 tf32 for sm_80; 32 x 32 x 16 with 4 warps spills 8 bytes in fp32 for sm_80 under triton
# 3.6's ptxas).
FORWARD_CONFIGS = (KernelConfig(32, 128, 32, 8), KernelConfig(16, 64, 16, 4))
BACKWARD_CONFIGS = (KernelConfig(64, 16, 16, 8), KernelConfig(32, 16, 16, 4))
# Backward configs launched with 16-byte loads where D and K are multiples of 16: the small one spills
# 4 bytes so (fp32 without tf32, sm_90, triton 3.6's ptxas) and keeps scalar loads.
BACKWARD_ALIGNED_CONFIGS = (BACKWARD_CONFIGS[0],)


@dataclass(frozen=True)
class PassConfig:
    """Tile of the elementwise passes over stored projections (``kernels/ecf_passes.py``)."""

    block_n: int
    block_k: int
    num_warps: int

    def constexprs(self) -> dict:
        return dict(BLOCK_N=self.block_n, BLOCK_K=self.block_k)


# BLOCK_K = 32 x num_warps: one column per thread, so the forward's sum over a chunk's rows stays in
# the thread (ptxas: no shared memory). From ptxas reports: the forward at 16 rows per chunk uses ~142
# registers, no spills; the backward spills at (16 or 8, 128, 4 warps) for sm_80 and not at
# (8, 256, 8 warps), 98 registers. Neither is timed on a GPU yet.
COLSUMS_CONFIG = PassConfig(16, 128, 4)
DP_CONFIG = PassConfig(8, 256, 8)
# SIGReg's statistic from the forward's partial sums (ecf_stat_kernel): one fp64 column per thread,
# O(V K T splits) loads in all; block_n unused.
STAT_CONFIG = PassConfig(1, 128, 4)
# VISReg's centre and scale terms (kernels/visreg_terms.py): 32 columns (a 128-byte row segment) of one
# view per program, walked in 32-row chunks; block_k is the columns. Not timed on a GPU.
TERMS_CONFIG = PassConfig(32, 32, 4)
# Row splits of the forward: enough programs to give every SM PROGRAMS_PER_SM of them, but at least
# SPLIT_ROWS_MIN rows each, so the fp64 partial sums (V, splits, 2, T, K) stay O(SMs x BLOCK_K x T),
# independent of N.
PROGRAMS_PER_SM = 4
SPLIT_ROWS_MIN = 256


def precisions(dtype: torch.dtype, allow_tf32: bool) -> dict:
    """tl.dot input precisions. fp32 inputs follow torch's fp32 matmul setting (tf32 or not) in both dots;
    16-bit inputs multiply exactly on tensor cores, and their dX = dP A^T splits the fp32 dP into two
    tf32 parts ("tf32x2": two tensor-core dots, dP kept to about 2^-22), so that the gradient's error
    is the inputs' rounding, as eager's, and not tf32's 2^-11 on dP."""
    if dtype == torch.float32:
        p = "tf32" if allow_tf32 else "ieee"
        return dict(DOT_PRECISION=p, DX_PRECISION=p)
    return dict(DOT_PRECISION="ieee", DX_PRECISION="tf32x2")


# --------------------------------------------------------------------------------- sort-match


@dataclass(frozen=True)
class SortConfig:
    block_n: int  # sort width: the next power of two >= N (padding sorts last)
    block_s: int  # adjacent slices (columns) per program: coalesced loads, 32 bytes per row at 8
    num_warps: int


# One config per sort width, 8 keys per thread: BLOCK_S x BLOCK_N = 256 x num_warps, BLOCK_S up to 8
# (a 32-byte sector per row) with at most 8 warps, then one column per program for the widest sorts.
# Not timed on a GPU; wider sorts go to the extension's CUDA backend.
SORT_CONFIGS = (
    SortConfig(32, 8, 1),
    SortConfig(64, 8, 2),
    SortConfig(128, 8, 4),
    SortConfig(256, 8, 8),
    SortConfig(512, 4, 8),
    SortConfig(1024, 2, 8),
    SortConfig(2048, 1, 8),
    SortConfig(4096, 1, 16),
)
MAX_SORT_N = SORT_CONFIGS[-1].block_n  # widest sort (rows per slice) the kernel is compiled for
# The statistics kernel (kernels/sort_stat.py) on the same configs up to 1024 rows: at 2048 its Shapiro-Wilk
# variant spills 8 bytes for sm_90 under triton 3.6.
STAT_CONFIGS = tuple(cfg for cfg in SORT_CONFIGS if cfg.block_n <= 1024)
MAX_STAT_N = STAT_CONFIGS[-1].block_n
# Anderson-Darling (kernels/sort_stat.py) and NLL (kernels/order_nll.py) on the same widths with half the
# columns, 4 keys per thread: their float64 erf and logs at 8 keys per thread spilled under triton 3.6 (NLL in
# most configurations, Anderson-Darling at every width; compile-check before these configs).
F64_STAT_CONFIGS = tuple(SortConfig(cfg.block_n, cfg.block_s // 2, cfg.num_warps) for cfg in STAT_CONFIGS[:-1]) + (
    SortConfig(1024, 1, 16),  # 2 keys per thread: at 4 Anderson-Darling spilled 8 bytes for sm_90 under triton 3.6
)

# The moment statistics' kernel (kernels/moment_stat.py) walks any N in chunks of block_n rows: one
# config, 32 columns (a 128-byte row segment) per program. Not timed on a GPU.
MOMENT_CONFIG = SortConfig(32, 32, 4)


def f64_stat_config(n: int) -> SortConfig:
    for cfg in F64_STAT_CONFIGS:
        if n <= cfg.block_n:
            return cfg
    raise ValueError(f"the float64 statistics sort at most {MAX_STAT_N} values per slice, got N = {n}")


def sort_config(n: int) -> SortConfig:
    for cfg in SORT_CONFIGS:
        if n <= cfg.block_n:
            return cfg
    raise ValueError(f"sort_match_triton sorts at most {MAX_SORT_N} values per slice, got N = {n}")


# ------------------------------------------------------------------------------ compile check


@dataclass(frozen=True)
class CompileSpec:
    """One launchable variant of a kernel: its typed signature and constexprs."""

    kernel: object  # a triton JITFunction
    config: str  # human-readable config, e.g. "BN64 BK64 BD32 w4"
    variant: str  # dtype / precision variant, e.g. "bf16"
    signature: Dict[str, str]  # arg name -> "*fp32" / "i32" / "fp32" / "constexpr"
    constexprs: Dict[str, object]
    num_warps: int
    aligned_pointers: tuple = field(default=())  # arg names launched 16-byte aligned
    options: Dict[str, object] = field(default_factory=dict)  # compile options the launch passes too
    # elements of P each thread holds, for a kernel with a knot loop (compile-check's SASS per element and
    # per knot); 0 for the others
    knot_elements: int = 0
    knots_per_iteration: int = 1  # the knot loop's unroll factor
