"""The ``cpu`` and ``cuda`` backends: the compiled extension (``csrc/``): sort-and-match for SWD,
VISReg and RDMReg on both, and SIGReg's ECF stage on CPU."""
from __future__ import annotations

import torch

from . import extension
from .dispatch import Backend, kernel_supports, register_backend

def _supports_on(device_type: str):
    return lambda op, tensors: kernel_supports(tensors, device_type)


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
