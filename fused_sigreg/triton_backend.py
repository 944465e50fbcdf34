"""The ``triton`` backend: fused Triton kernels on CUDA tensors.

With ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors
in Triton's interpreter instead: that is how they are tested without a GPU, and only an explicit
``backend="triton"`` uses it then."""
from __future__ import annotations

import importlib.util
import os

import torch

from .dispatch import Backend, kernel_supports, register_backend

def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors in Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _available():
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if interpreter_mode() or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors in Triton's interpreter)"


SORT_OPS = ("sliced_wasserstein", "visreg", "rdmreg")
# Widest sort the Triton kernel is compiled for (ops/sort_match_triton.py MAX_N); kept here so
# that asking whether a call fits does not import triton.
MAX_SORT_N = 4096


def _supports(op, tensors):
    if interpreter_mode():
        ok, why = kernel_supports(tensors, "cpu", " (interpreter mode)")
    else:
        ok, why = kernel_supports(tensors, "cuda")
    n = tensors[0].shape[-2]
    if ok and op in SORT_OPS and n > MAX_SORT_N:
        return False, f"its sort kernel takes N <= {MAX_SORT_N} rows per slice, got N = {n}"
    return ok, why


def _ecf_means(*args):
    from .ops.sigreg_triton import ecf_means

    return ecf_means(*args)


def _sort_stage(name):
    def call(*args):
        from .ops.sort_match_triton import STAGES

        return STAGES[name](*args)
    return call


register_backend(Backend("triton", priority=20, ops={"ecf_means": _ecf_means, **{op: _sort_stage(op) for op in SORT_OPS}},
                         available=_available, supports=_supports, emulated=interpreter_mode))
