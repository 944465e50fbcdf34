"""Launching Triton kernels: on the inputs' device, compile failures as ``KernelCompileError``, and
Triton's interpreter made usable on the versions that need it. Imports triton."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import numpy
import torch
import triton
from triton.errors import TritonError
from triton.runtime import interpreter

from ...dispatch import KernelCompileError
from .configs import interpreter_mode

_FALLBACK_SM_COUNT = 132  # H100; sizes the grid heuristics where there is no device (the interpreter)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launchers' grids: ``triton.cdiv`` is a constexpr function that costs ~2 us per
    host call (triton 3.8), and a fwd+bwd makes a dozen; at training sizes host time is the call's time."""
    return -(-a // b)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (the grids' unit of parallelism); 132 off CUDA."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return _FALLBACK_SM_COUNT


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


# The hot ops' registrations (``kernel_op``); the package's other ops use torch.library.custom_op.
_LIBRARY = torch.library.Library("fused_sigreg", "FRAGMENT")


def kernel_op(schema: str):
    """Decorator: ``fn`` as the operator ``fused_sigreg::<schema>`` for CUDA tensors (and CPU ones, which
    Triton's interpreter runs), returned as its OpOverload; add its fake with ``torch.library.register_fake``.

    Registered with torch.library's low-level ``Library`` rather than ``custom_op``: at training sizes a
    SIGReg call is host-bound, and custom_op's Python layers (autograd, in-place and dynamo wrappers) cost
    host time on every call (SIGReg's fwd+bwd, launches stubbed, ~230 -> ~190 us on the development machine:
    ``benchmarks/host_time.py``). These ops need no autograd of their own: they run inside the autograd functions of
    ``backends/ecf_passes.py``, which also bump the version of what an in-place op writes."""

    def register(fn: Callable) -> torch._ops.OpOverload:
        name = schema.split("(", 1)[0]
        _LIBRARY.define(schema)
        for key in ("CUDA", "CPU"):
            _LIBRARY.impl(name, fn, key)
        return getattr(torch.ops.fused_sigreg, name).default

    return register


def device_of(t: torch.Tensor):
    """Context that makes ``t``'s GPU current for a launch: Triton launches on the current device
    and its current stream, which need not be ``t``'s (e.g. x on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def launch(kernel, grid, args, config, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)`` on ``args[0]``'s device; a Triton failure becomes
    ``KernelCompileError`` naming the kernel and ``config``, which lets ``auto`` fall back to eager."""
    try:
        with device_of(args[0]):
            kernel[grid](*args, **kwargs)
    except TritonError as e:
        raise KernelCompileError(f"{kernel.__name__} failed to compile or launch ({config}): {e}") from e


def patch_interpreter_index() -> None:
    """Triton's interpreter before 3.7 turns a one-element array into a loop bound with ``int()``, which
    numpy >= 2.4 refuses for arrays that are not 0-d (fixed upstream by squeezing first). Does the
    same here, only in interpreter mode on the affected versions; compiled kernels are untouched."""
    if not interpreter_mode():
        return

    def version(text):
        return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if (
        version(triton.__version__) >= (3, 7)
        or version(numpy.__version__) < (2, 4)
        or patch is None
        or getattr(patch, "squeezes_index", False)
    ):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.squeezes_index = True
    interpreter._patch_lang_tensor = patched


patch_interpreter_index()
