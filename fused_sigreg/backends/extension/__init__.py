"""The ``cpu`` and ``cuda`` backends: the compiled extension (``csrc/``, loaded by ``library.py``):
sort-and-match for SWD, VISReg and RDMReg on both (``sort_match.py``), SIGReg's ECF stage and
lejepa's EDF- and moment-family statistics and NLL on CPU (``sigreg_cpu.py``, ``sort_stat.py``,
``moment_stat.py``, ``order_nll.py``).
Registering them loads the library but imports no stage module."""

from __future__ import annotations

import torch

from ...dispatch import (
    EDF_STATISTICS,
    MOMENT_STATISTICS,
    SORT_STAGES,
    Backend,
    kernel_supports,
    lazy_op,
    register_backend,
)
from . import library


def _supports_on(device_type: str):
    return lambda op, tensors: kernel_supports(tensors, device_type)


def _available_on(dispatch_key: str):
    def available():
        ok, why = library.available()
        if not ok:
            return ok, why
        if not library.has_kernel("sort_match", dispatch_key):
            return False, "the extension was built without its CUDA sources (FUSED_SIGREG_BUILD_CUDA)"
        if dispatch_key == "CUDA" and not torch.cuda.is_available():
            return False, "no CUDA device"
        return True, ""

    return available


def _sort_stages():
    from . import sort_match

    return sort_match.STAGES


def _statistic_stages():
    from . import sort_stat

    return sort_stat.STAGES


def _moment_stages():
    from . import moment_stat

    return moment_stat.STAGES


def _nll_stages():
    from . import order_nll

    return order_nll.STAGES


def _sigreg_cpu_stages():
    from . import sigreg_cpu

    return sigreg_cpu.STAGES


_OPS = {name: lazy_op(_sort_stages, name) for name in SORT_STAGES}
register_backend(
    Backend(
        "cpu",
        priority=10,
        ops=dict(
            _OPS,
            ecf_means=lazy_op(_sigreg_cpu_stages, "ecf_means"),
            sigreg_stats=lazy_op(_sigreg_cpu_stages, "sigreg_stats"),
            **{name: lazy_op(_statistic_stages, name) for name in EDF_STATISTICS},
            **{name: lazy_op(_moment_stages, name) for name in MOMENT_STATISTICS},
            nll=lazy_op(_nll_stages, "nll"),
        ),
        available=_available_on("CPU"),
        supports=_supports_on("cpu"),
        devices=("cpu",),
    )
)
# The sort stages go to the CUDA extension before Triton: on an H100 (benchmarks/results/cuda/, N = 2048,
# D = K = 512, fwd+bwd) CUB's block radix sort beat the Triton kernel's bitonic sort for SWD (0.56 vs 0.85
# ms), VISReg (1.64 vs 1.94) and RDMReg (0.68 vs 0.85). Both sort one slice per CTA up to N = 4096;
# smaller N are not measured.
register_backend(
    Backend(
        "cuda",
        priority=10,
        ops=dict(_OPS),
        available=_available_on("CUDA"),
        supports=_supports_on("cuda"),
        stage_priority={name: 30 for name in SORT_STAGES},
        devices=("cuda",),
    )
)
