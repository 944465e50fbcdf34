"""The ``triton`` backend: fused Triton kernels on CUDA tensors.

With ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors
in Triton's interpreter instead: that is how they are tested without a GPU, and only an explicit
``backend="triton"`` uses it then."""
from __future__ import annotations

import importlib.util
import os

import torch

from .dispatch import Backend, register_backend

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors in Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _available():
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if interpreter_mode() or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors in Triton's interpreter)"


def _supports(op, tensors):
    x, directions = tensors[0], tensors[1]
    wanted = "cpu" if interpreter_mode() else "cuda"
    if x.device.type != wanted:
        return False, f"it runs on {wanted} tensors{' (interpreter mode)' if interpreter_mode() else ''}, got {x.device}"
    if x.dtype not in _DTYPES:
        return False, f"it takes float32/bfloat16/float16 inputs, got {x.dtype}"
    if directions.requires_grad:
        return False, "directions require grad, and the fused kernel does not differentiate them"
    return True, ""


def _ecf_means(*args):
    from .ops.sigreg_triton import ecf_means

    return ecf_means(*args)


register_backend(Backend("triton", priority=20, ops={"ecf_means": _ecf_means},
                         available=_available, supports=_supports, emulated=interpreter_mode))
