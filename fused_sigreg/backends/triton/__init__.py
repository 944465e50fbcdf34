"""The ``triton`` backend: Triton kernels on CUDA tensors (``sigreg_passes.py``: SIGReg's passes over stored
projections and the routing to the fully fused ``sigreg_fused.py``; ``sort_match.py``; ``sort_stat.py``;
``moment_stat.py``).

Registering it imports neither triton nor the kernels: the stages load on first use.
With ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors
in Triton's interpreter instead: that is how they are tested without a GPU, and only an explicit
``backend="triton"`` uses it then."""

from __future__ import annotations

import importlib.util

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
from .configs import MAX_SORT_N, MAX_STAT_N, interpreter_mode

# Decided once at import: torch.compile refuses importlib's finder inside a traced call.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _available():
    if not _TRITON_INSTALLED:
        return False, "triton is not installed"
    if interpreter_mode() or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors in Triton's interpreter)"


def _supports(op, tensors):
    if interpreter_mode():
        ok, why = kernel_supports(tensors, "cpu", " (interpreter mode)")
    else:
        ok, why = kernel_supports(tensors, "cuda")
    n = tensors[0].shape[-2]
    if ok and op in SORT_STAGES and n > MAX_SORT_N:
        return False, f"its sort kernel takes N <= {MAX_SORT_N} rows per slice, got N = {n}"
    if ok and (op in EDF_STATISTICS or op == "nll") and n > MAX_STAT_N:
        return False, f"its statistics kernel takes N <= {MAX_STAT_N} rows per slice, got N = {n}"
    return ok, why


def _sigreg_stages():
    from . import sigreg_passes

    return sigreg_passes.STAGES


def _sort_stages():
    from . import sort_match

    return sort_match.STAGES


def _statistic_stages():
    from . import sort_stat

    return sort_stat.STAGES


def _nll_stages():
    from . import order_nll

    return order_nll.STAGES


def _moment_stages():
    from . import moment_stat

    return moment_stat.STAGES


_OPS = {
    "ecf_means": lazy_op(_sigreg_stages, "ecf_means"),
    "sigreg_stats": lazy_op(_sigreg_stages, "sigreg_stats"),
    "ecf_means_min": lazy_op(_sigreg_stages, "ecf_means_min"),
    **{name: lazy_op(_sort_stages, name) for name in SORT_STAGES},
    **{name: lazy_op(_statistic_stages, name) for name in EDF_STATISTICS},
    **{name: lazy_op(_moment_stages, name) for name in MOMENT_STATISTICS},
    "nll": lazy_op(_nll_stages, "nll"),
}
register_backend(
    Backend(
        "triton",
        priority=20,
        ops=_OPS,
        available=_available,
        supports=_supports,
        emulated=interpreter_mode,
        devices=("cuda",),  # in the interpreter (CPU tensors) it is emulated: explicit requests only
    )
)
