"""Sweep definitions: per op, sizes along N, K, D and V around a base point, capped per device.

CPU sizes finish in minutes on a 2-core machine; CUDA sizes reach the LeJEPA Table 6 and VISReg
scaling settings (N = 8192 / 32768 with 512 slices; V = 8, N up to 50000, D up to 10000).
"""

from fused_sigreg.dispatch import STATISTICS
from fused_sigreg.tools.problems import OPS, Shape

AXES = {
    "cpu": dict(
        base=Shape(1, 4096, 256, 256),
        N=(256, 1024, 4096, 16384),
        K=(64, 256, 1024),
        D=(64, 256, 1024),
        V=(1, 2, 8),
        V_at_N=1024,
    ),
    "cuda": dict(
        base=Shape(1, 8192, 512, 512),
        N=(2048, 8192, 32768, 65536),
        K=(64, 512, 2048, 8192),
        D=(64, 512, 2048, 4096),
        V=(1, 2, 8),
        V_at_N=8192,
    ),
}


# Where people train, on every device: LeJEPA's recommended points (paper, Table 1: 2 global + 8 local views,
# a few dozen to a few hundred samples per GPU, projector 128, 1024-4096 slices), a large projector, and the
# VISReg trainer's default per-GPU batch of 16 with its 256 slices.
TRAINING = (
    Shape(10, 64, 128, 1024),
    Shape(10, 64, 128, 4096),
    Shape(10, 256, 128, 1024),
    Shape(10, 256, 128, 4096),
    Shape(2, 256, 1024, 1024),
    Shape(2, 16, 256, 256),
)


def shapes(device: str):
    """Distinct shapes of the sweep for ``device``, base point first; each tagged with the swept axis
    (N, K, D, V) or "training" (``TRAINING``)."""
    axes = AXES[device]
    b = axes["base"]
    out = {b: "base"}
    for n in axes["N"]:
        out.setdefault(Shape(b.V, n, b.D, b.K), "N")
    for k in axes["K"]:
        out.setdefault(Shape(b.V, b.N, b.D, k), "K")
    for d in axes["D"]:
        out.setdefault(Shape(b.V, b.N, d, b.K), "D")
    for v in axes["V"]:
        out.setdefault(Shape(v, axes["V_at_N"], b.D, b.K), "V")
    for shape in TRAINING:
        out.setdefault(shape, "training")
    return list(out.items())


# lejepa's EDF-family statistics (on the projections x @ W, mean over slices): the base point, a small and
# a large N, and the LeJEPA and VISReg training points; the fused sort needs N <= 4096 on a GPU.
STATISTIC_N = {"cpu": (1024, 16384), "cuda": (1024,)}


def statistic_shapes(device: str):
    """The statistics' points for ``device``: base (N = 4096, D = K = 256 on CPU), N, training."""
    b = AXES[device]["base"]
    base = Shape(1, 4096, b.D if device == "cpu" else 256, b.K if device == "cpu" else 256)
    out = {base: "base"}
    for n in STATISTIC_N[device]:
        out.setdefault(Shape(1, n, base.D, base.K), "N")
    for shape in (TRAINING[2], TRAINING[5]):
        out.setdefault(shape, "training")
    return list(out.items())


SWEEPS = {
    device: {**{op: shapes(device) for op in OPS}, **{op: statistic_shapes(device) for op in STATISTICS}}
    for device in AXES
}
