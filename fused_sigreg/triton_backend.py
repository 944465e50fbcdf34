"""The ``triton`` backend: fused Triton kernels on CUDA tensors.

With ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors
in Triton's interpreter instead: that is how they are tested without a GPU, and only an explicit
``backend="triton"`` uses it then."""
from __future__ import annotations

import importlib.util
import os

import torch

from .dispatch import SORT_STAGES, Backend, kernel_supports, lazy_op, register_backend

def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors in Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _available():
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if interpreter_mode() or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors in Triton's interpreter)"


# Widest sort the Triton kernel is compiled for (ops/sort_match_triton.py MAX_N); kept here so
# that asking whether a call fits does not import triton.
MAX_SORT_N = 4096


def _supports(op, tensors):
    if interpreter_mode():
        ok, why = kernel_supports(tensors, "cpu", " (interpreter mode)")
    else:
        ok, why = kernel_supports(tensors, "cuda")
    n = tensors[0].shape[-2]
    if ok and op in SORT_STAGES and n > MAX_SORT_N:
        return False, f"its sort kernel takes N <= {MAX_SORT_N} rows per slice, got N = {n}"
    return ok, why


def _sigreg_stages():
    from .ops import sigreg_triton

    return sigreg_triton.STAGES


def _sort_stages():
    from .ops import sort_match_triton

    return sort_match_triton.STAGES


_OPS = {"ecf_means": lazy_op(_sigreg_stages, "ecf_means"), **{name: lazy_op(_sort_stages, name) for name in SORT_STAGES}}
register_backend(Backend("triton", priority=20, ops=_OPS, available=_available, supports=_supports,
                         emulated=interpreter_mode))
