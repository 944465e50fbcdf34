"""The ``cpu`` and ``cuda`` backends: the compiled extension (``csrc/``): sort-and-match for SWD,
VISReg and RDMReg on both, and SIGReg's ECF stage on CPU."""
from __future__ import annotations

import torch

from . import extension
from .dispatch import Backend, register_backend

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _supports_on(device_type: str):
    def supports(op, tensors):
        x = tensors[0]
        if x.device.type != device_type:
            return False, f"it runs on {device_type} tensors, got {x.device}"
        if x.dtype not in _DTYPES:
            return False, f"it takes float32/bfloat16/float16 inputs, got {x.dtype}"
        if any(t.requires_grad for t in tensors[1:]):
            return False, "directions or target samples require grad, and the extension does not differentiate them"
        return True, ""
    return supports


def _available_on(dispatch_key: str):
    def available():
        ok, why = extension.available()
        if not ok:
            return ok, why
        if not extension.has_kernel("sort_match", dispatch_key):
            return False, "the extension was built without its CUDA sources (FUSED_SIGREG_BUILD_CUDA)"
        if dispatch_key == "CUDA" and not torch.cuda.is_available():
            return False, "no CUDA device"
        return True, ""
    return available


def _stage(name):
    def call(*args):
        from .ops.sort_match import STAGES

        return STAGES[name](*args)
    return call


def _ecf_means(*args):
    from .ops.sigreg_cpu import ecf_means

    return ecf_means(*args)


_OPS = {name: _stage(name) for name in ("sliced_wasserstein", "visreg", "rdmreg")}
register_backend(Backend("cpu", priority=10, ops=dict(_OPS, ecf_means=_ecf_means), available=_available_on("CPU"),
                         supports=_supports_on("cpu")))
register_backend(Backend("cuda", priority=10, ops=dict(_OPS), available=_available_on("CUDA"),
                         supports=_supports_on("cuda")))
