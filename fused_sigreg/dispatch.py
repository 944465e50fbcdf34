"""Backend registry and per-call selection (DESIGN.md §4).

A backend serves some *ops* (named stages such as ``"ecf_means"``) with callables that take
the same arguments as the eager reference of that stage. ``select`` picks one per call:
an explicit name must serve the call or raise ``BackendUnavailableError``; ``"auto"`` walks the
registered backends by priority and falls back to ``eager``, logging each reason once.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

logger = logging.getLogger("fused_sigreg")

ENV_VAR = "FUSED_SIGREG_BACKEND"
BACKEND_NAMES = ("auto", "eager", "triton", "cuda", "cpu")
# Backends that later issues implement; listed so that available_backends() explains them.
_PLANNED = {name: "no such backend is registered" for name in BACKEND_NAMES[1:]}

Verdict = Tuple[bool, str]


class BackendUnavailableError(ValueError):
    """An explicitly requested backend cannot serve this call (the message says why)."""


class KernelCompileError(RuntimeError):
    """A backend's kernel failed to compile or launch on this machine (raised by its launcher)."""


@dataclass
class Backend:
    """One backend: its ops, whether it can run here, and which calls it accepts.

    ``available()`` is asked once per process state (e.g. "triton not installed");
    ``supports(op, tensors)`` per call (e.g. "CPU tensors", "N > 4096").
    """

    name: str
    priority: int
    ops: Dict[str, Callable] = field(default_factory=dict)
    available: Callable[[], Verdict] = lambda: (True, "")
    supports: Callable[[str, tuple], Verdict] = lambda op, tensors: (True, "")
    # True while the backend runs on an emulator (Triton's interpreter): it then serves explicit
    # requests only, so that ``auto`` never routes real work through it and bench never times it.
    emulated: Callable[[], bool] = lambda: False

    def verdict(self, op: str, tensors: tuple) -> Verdict:
        ok, why = self.available()
        if not ok:
            return False, why
        if op not in self.ops:
            return False, f"it has no implementation of {op!r}"
        if (self.name, op) in _BROKEN:
            return False, _BROKEN[(self.name, op)]
        return self.supports(op, tensors)


_REGISTRY: Dict[str, Backend] = {}
_LOGGED = set()
_BROKEN: Dict[Tuple[str, str], str] = {}  # (backend, op) -> why its kernel failed to compile here


KERNEL_DTYPES = ("float32", "bfloat16", "float16")


def kernel_supports(tensors: tuple, device_type: str, device_note: str = "") -> Verdict:
    """What every compiled/fused backend requires of a call: x (tensors[0]) on ``device_type`` in
    float32/bfloat16/float16, and no gradient wanted for the other inputs (directions, targets)."""
    x = tensors[0]
    if x.device.type != device_type:
        return False, f"it runs on {device_type} tensors{device_note}, got {x.device}"
    if str(x.dtype).replace("torch.", "") not in KERNEL_DTYPES:
        return False, f"it takes float32/bfloat16/float16 inputs, got {x.dtype}"
    for name, t in zip(("directions", "target samples"), tensors[1:]):
        if t.requires_grad:
            return False, f"{name} require grad, and its kernels do not differentiate them"
    return True, ""


def lazy_op(stages: Callable[[], Dict[str, Callable]], name: str) -> Callable:
    """An op implementation that calls ``stages()[name]``: ``stages`` imports the backend's module
    (with an import statement, which torch.compile traces) and returns its table of stages, so that
    registering a backend imports neither triton nor the extension."""

    def call(*args):
        return stages()[name](*args)

    return call


SORT_STAGES = ("sliced_wasserstein", "visreg", "rdmreg")


def register_backend(backend: Backend) -> None:
    if backend.name not in BACKEND_NAMES or backend.name == "auto":
        raise ValueError(f"backend name must be one of {BACKEND_NAMES[1:]}, got {backend.name!r}")
    _REGISTRY[backend.name] = backend


def registered_backends() -> Dict[str, Backend]:
    return dict(_REGISTRY)


def available_backends() -> Dict[str, Verdict]:
    """For each backend name: (usable here, reason when not)."""
    out = {}
    for name in BACKEND_NAMES[1:]:
        backend = _REGISTRY.get(name)
        out[name] = backend.available() if backend is not None else (False, _PLANNED[name])
    return out


def requested_backend(backend: Optional[str]) -> str:
    """The explicit argument, else ``$FUSED_SIGREG_BACKEND``, else ``"auto"``; validated."""
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR) or "auto", ENV_VAR
    if not isinstance(backend, str) or backend.lower() not in BACKEND_NAMES:
        raise ValueError(f"{source} must be one of {', '.join(BACKEND_NAMES)}; got {backend!r}")
    return backend.lower()


def _log_once(op: str, name: str, why: str) -> None:
    key = (op, name, why)
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.info("fused_sigreg: %s: backend %r not used (%s); trying the next one", op, name, why)


def select(op: str, tensors: tuple, backend: Optional[str] = None) -> Tuple[str, Callable]:
    """(backend name, callable) that serves ``op`` for these input tensors."""
    name = requested_backend(backend)
    if name != "auto":
        impl = _REGISTRY.get(name)
        if impl is None:
            raise BackendUnavailableError(f"backend {name!r} was requested for {op} but is unavailable: {_PLANNED[name]}")
        ok, why = impl.verdict(op, tensors)
        if not ok:
            raise BackendUnavailableError(f"backend {name!r} was requested for {op} but cannot serve this call: {why}")
        return name, impl.ops[op]
    for impl in sorted(_REGISTRY.values(), key=lambda b: -b.priority):
        ok, why = impl.verdict(op, tensors)
        if ok and impl.emulated():
            ok, why = False, "it runs in an emulator here, so it serves explicit requests only"
        if ok:
            return impl.name, impl.ops[op]
        _log_once(op, impl.name, why)
    raise BackendUnavailableError(f"no registered backend serves {op} (the eager backend is missing)")



def run(op: str, tensors: tuple, backend: Optional[str], *args):
    """Select a backend for ``op`` and call it with ``args``.

    Under ``auto``, a kernel that fails to compile here is marked broken for this process (warned
    once) and the call falls back to eager; an explicitly requested backend re-raises.
    """
    name, impl = select(op, tensors, backend)
    try:
        return impl(*args)
    except KernelCompileError as e:
        if requested_backend(backend) != "auto":
            raise
        _BROKEN[(name, op)] = f"its kernel failed to compile here: {e}"
        warnings.warn(f"fused_sigreg: {op} on backend {name!r} failed to compile; using eager from now on ({e})",
                      RuntimeWarning, stacklevel=3)
        return _REGISTRY["eager"].ops[op](*args)
