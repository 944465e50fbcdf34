"""The ``triton`` backend: fused Triton kernels on CUDA tensors.

With ``TRITON_INTERPRET=1`` (set before triton is first imported) the kernels run on CPU tensors
in Triton's interpreter instead: that is how they are tested without a GPU, and only an explicit
``backend="triton"`` uses it then."""
from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

from .dispatch import SORT_STAGES, Backend, kernel_supports, lazy_op, register_backend



def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors in Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fp32_matmul_uses_tf32() -> bool:
    """Whether fp32 matmuls may use tf32, as the user set it through either of torch's APIs.

    ``torch.backends.cuda.matmul.fp32_precision`` (newer torch) resolves the global
    ``torch.backends.fp32_precision`` and mirrors the legacy ``allow_tf32``; reading the legacy flag
    after the new API was used raises in torch, so the new one is read wherever it exists."""
    if NEW_TF32_API:
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


# newer torch has the fp32_precision settings; older torch only allow_tf32
NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


def device_of(t: torch.Tensor):
    """Context that makes ``t``'s GPU current for a launch: Triton launches on the current device
    and its current stream, which need not be ``t``'s (e.g. x on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# Decided once at import: torch.compile refuses importlib's finder inside a traced call.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _available():
    if not _TRITON_INSTALLED:
        return False, "triton is not installed"
    if interpreter_mode() or torch.cuda.is_available():
        return True, ""
    return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors in Triton's interpreter)"


def patch_interpreter_index() -> None:
    """Triton's interpreter before 3.7 turns a one-element array into a loop bound with ``int()``, which
    numpy >= 2.4 refuses for arrays that are not 0-d (fixed upstream by squeezing first). Does the
    same here, only in interpreter mode on the affected versions; compiled kernels are untouched."""
    if not interpreter_mode():
        return
    import numpy
    import triton
    from triton.runtime import interpreter

    def version(text):
        return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if (version(triton.__version__) >= (3, 7) or version(numpy.__version__) < (2, 4) or patch is None
            or getattr(patch, "squeezes_index", False)):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.squeezes_index = True
    interpreter._patch_lang_tensor = patched


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
