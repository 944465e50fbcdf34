"""Backend registry and per-call selection (docs/design.md §4).

A backend serves some *stages* (``"sigreg_stats"``, ``"sliced_wasserstein"``, ...) with callables that
take the same arguments as the eager reference of that stage. ``select`` picks one per call: an
explicit name must serve the call or raise ``BackendUnavailableError``; ``"auto"`` walks the
registered backends by priority and falls back to ``eager``, logging each reason once.

The registry is one ``Registry`` object (``REGISTRY``); tests swap in a copy with ``use_registry``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch.autograd import forward_ad

logger = logging.getLogger("fused_sigreg")

ENV_VAR = "FUSED_SIGREG_BACKEND"
BACKEND_NAMES = ("auto", "eager", "triton", "cuda", "cpu")
KERNEL_DTYPES = ("float32", "bfloat16", "float16")
SORT_STAGES = ("sliced_wasserstein", "visreg", "rdmreg")
# The stage each public op dispatches: what a backend must implement to serve it. SIGReg on one batch
# dispatches "sigreg_stats" (the statistic per slice: (x, directions, t_max, n_points, reduction=None), reduced
# by the stage itself when the op passes "mean" / "sum"); averaged over ranks (torch.distributed, sync=True)
# "ecf_means", and with memory="min" "ecf_means_min"; a backend serving SIGReg serves the first two. The
# one table; tools and tests read it from here.
OP_STAGES = {
    "sigreg": "sigreg_stats",
    "sliced_wasserstein": "sliced_wasserstein",
    "visreg": "visreg",
    "rdmreg": "rdmreg",
}
OPS = tuple(OP_STAGES)
# lejepa's univariate tests on samples (..., N, K) (``fused_sigreg.ops.univariate``), the EDF family (one
# sort per column) and the moment family (power sums); each is its own stage. ``bench`` and ``check`` take
# them as ops on the projections x @ W (TOOL_OPS, STAGE_OF).
EDF_STATISTICS = ("anderson_darling", "cramer_von_mises", "watson", "shapiro_wilk", "entropy")
MOMENT_STATISTICS = ("moments", "vcreg", "extended_jarque_bera")
# lejepa's NLL: a value per sample (..., N, K), not per column, from one sort per column
SAMPLE_STATISTICS = ("nll",)
STATISTICS = EDF_STATISTICS + MOMENT_STATISTICS + SAMPLE_STATISTICS
TOOL_OPS = OPS + STATISTICS
STAGE_OF = {**OP_STAGES, **{name: name for name in STATISTICS}}

Verdict = Tuple[bool, str]


class BackendUnavailableError(ValueError):
    """An explicitly requested backend cannot serve this call (the message says why)."""


class KernelCompileError(RuntimeError):
    """A backend's kernel failed to compile or launch on this machine (raised by its launcher)."""


@dataclass
class Backend:
    """One backend: its stages, whether it can run here, and which calls it accepts.

    ``available()`` answers for the process (e.g. "triton is not installed");
    ``supports(stage, tensors)`` per call (e.g. "CPU tensors", "N > 4096").
    """

    name: str
    priority: int
    ops: Dict[str, Callable] = field(default_factory=dict)
    available: Callable[[], Verdict] = lambda: (True, "")
    supports: Callable[[str, tuple], Verdict] = lambda op, tensors: (True, "")
    # True while the backend runs on an emulator (Triton's interpreter): it then serves explicit
    # requests only, so that ``auto`` never routes real work through it and bench never times it.
    emulated: Callable[[], bool] = lambda: False
    # Per-stage priorities that override ``priority`` under ``auto`` (e.g. the CUDA sort before Triton's).
    stage_priority: Dict[str, int] = field(default_factory=dict)
    # The device types whose tensors ``auto`` may route to it (empty: any). ``auto`` skips the others
    # before asking ``available``/``supports``: on the CPU at small batch those questions cost about
    # as much as the difference between the cpu backend and eager (docs/design.md §4).
    devices: Tuple[str, ...] = ()

    def priority_for(self, op: str) -> int:
        return self.stage_priority.get(op, self.priority)


class Registry:
    """The registered backends, which (backend, stage) pairs failed to compile in this process, and
    which fallback reasons were already logged."""

    def __init__(self, backends: Optional[Dict[str, Backend]] = None):
        self.backends: Dict[str, Backend] = dict(backends or {})
        self.broken: Dict[Tuple[str, str], str] = {}
        self.logged: set = set()
        self.orders: Dict[Tuple[str, str], tuple] = {}

    def copy(self) -> "Registry":
        """A registry with the same backends and fresh process state (nothing broken or logged)."""
        return Registry(self.backends)

    def register(self, backend: Backend) -> None:
        if backend.name not in BACKEND_NAMES or backend.name == "auto":
            raise ValueError(f"backend name must be one of {BACKEND_NAMES[1:]}, got {backend.name!r}")
        self.backends[backend.name] = backend

    def verdict(self, backend: Backend, op: str, tensors: tuple) -> Verdict:
        ok, why = backend.available()
        if not ok:
            return False, why
        if op not in backend.ops:
            return False, f"it has no implementation of {op!r}"
        if (backend.name, op) in self.broken:
            return False, self.broken[(backend.name, op)]
        return backend.supports(op, tensors)

    def available(self) -> Dict[str, Verdict]:
        """For each backend name: (usable here, reason when not)."""
        out = {}
        for name in BACKEND_NAMES[1:]:
            backend = self.backends.get(name)
            out[name] = backend.available() if backend is not None else (False, "no such backend is registered")
        return out

    def select(self, op: str, tensors: tuple, backend: Optional[str] = None) -> Tuple[str, Callable]:
        """(backend name, callable) that serves stage ``op`` for these input tensors."""
        name = requested_backend(backend)
        if name != "auto":
            impl = self.backends.get(name)
            if impl is None:
                raise BackendUnavailableError(
                    f"backend {name!r} was requested for {op} but is unavailable: no such backend is registered"
                )
            ok, why = self.verdict(impl, op, tensors)
            if not ok:
                raise BackendUnavailableError(
                    f"backend {name!r} was requested for {op} but cannot serve this call: {why}"
                )
            return name, impl.ops[op]
        for impl in self._auto_order(op, tensors[0].device.type):
            ok, why = self.verdict(impl, op, tensors)
            if ok and impl.emulated():
                ok, why = False, "it runs in an emulator here, so it serves explicit requests only"
            if ok:
                return impl.name, impl.ops[op]
            self._log_once(op, impl.name, why)
        why = "the eager backend is missing" if "eager" not in self.backends else "no backend serves these inputs"
        raise BackendUnavailableError(f"no registered backend serves {op} ({why})")

    def _auto_order(self, op: str, device: str) -> Tuple[Backend, ...]:
        """The backends ``auto`` asks for stage ``op`` on ``device`` tensors, highest priority first:
        worked out once per (op, device) and registry content, since asking costs a few µs per call."""
        backends = tuple(self.backends.values())
        cached = self.orders.get((op, device))
        if cached is not None and cached[0] == backends:
            return cached[1]
        order = []
        for impl in sorted(backends, key=lambda b: -b.priority_for(op)):
            if impl.devices and device not in impl.devices:
                self._log_once(op, impl.name, f"it runs on {'/'.join(impl.devices)} tensors, got {device}")
            else:
                order.append(impl)
        if not torch.compiler.is_compiling():  # a trace logs nothing: the next eager call logs and caches
            self.orders[(op, device)] = (backends, tuple(order))
        return tuple(order)

    def run(self, op: str, tensors: tuple, backend: Optional[str], *args):
        """Select a backend for ``op`` and call it with ``args``.

        Under ``auto``, a kernel that fails to compile here is marked broken for this process
        (warned once) and the call falls back to eager; an explicitly requested backend, or a stage
        that eager does not implement, re-raises.
        """
        name, impl = self.select(op, tensors, backend)
        try:
            return impl(*args)
        except KernelCompileError as e:
            # no fallback when forced, nor for a stage eager does not have (sigreg(memory="min"))
            if requested_backend(backend) != "auto" or op not in self.backends["eager"].ops:
                raise
            self.broken[(name, op)] = f"its kernel failed to compile here: {e}"
            warnings.warn(
                f"fused_sigreg: {op} on backend {name!r} failed to compile; using eager from now on ({e})",
                RuntimeWarning,
                stacklevel=3,
            )
            return self.backends["eager"].ops[op](*args)

    def _log_once(self, op: str, name: str, why: str) -> None:
        # not while torch.compile traces: dynamo cannot trace a logger (fullgraph=True fails), and
        # the same selection runs, and logs, on the first eager call or when the graph is built
        if torch.compiler.is_compiling():
            return
        key = (op, name, why)
        if key not in self.logged:
            self.logged.add(key)
            logger.info("fused_sigreg: %s: backend %r not used (%s); trying the next one", op, name, why)


REGISTRY = Registry()


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Route every dispatch through ``registry`` inside the block (tests use a ``REGISTRY.copy()``)."""
    global REGISTRY
    saved, REGISTRY = REGISTRY, registry
    try:
        yield registry
    finally:
        REGISTRY = saved


def register_backend(backend: Backend) -> None:
    REGISTRY.register(backend)


def registered_backends() -> Dict[str, Backend]:
    return dict(REGISTRY.backends)


def available_backends() -> Dict[str, Verdict]:
    """For each backend name: (usable here, reason when not)."""
    return REGISTRY.available()


def select(op: str, tensors: tuple, backend: Optional[str] = None) -> Tuple[str, Callable]:
    """(backend name, callable) that serves ``op`` for these input tensors (see ``Registry.select``)."""
    return REGISTRY.select(op, tensors, backend)


def run(op: str, tensors: tuple, backend: Optional[str], *args):
    """Select a backend for ``op`` and call it with ``args`` (see ``Registry.run``)."""
    return REGISTRY.run(op, tensors, backend, *args)


def requested_backend(backend: Optional[str]) -> str:
    """The explicit argument, else ``$FUSED_SIGREG_BACKEND``, else ``"auto"``; validated."""
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR) or "auto", ENV_VAR
    if not isinstance(backend, str) or backend.lower() not in BACKEND_NAMES:
        raise ValueError(f"{source} must be one of {', '.join(BACKEND_NAMES)}; got {backend!r}")
    return backend.lower()


def kernel_supports(tensors: tuple, device_type: str, device_note: str = "") -> Verdict:
    """What every compiled/fused backend requires of a call: x (tensors[0]) on ``device_type`` in
    float32/bfloat16/float16, no gradient wanted for the other inputs (directions, targets), and no
    torch.func transform around the call (the kernels' autograd.Functions have no functorch rules)."""
    x = tensors[0]
    if not torch.compiler.is_compiling():
        if torch._C._are_functorch_transforms_active():
            why = "torch.func transforms (grad, vmap, jacrev, ...) are active, which its kernels do not support"
            return False, why + " (backend='eager' does)"
        if has_tangent(tensors):
            why = "an input carries a forward-mode AD tangent (torch.autograd.forward_ad), which its kernels lack"
            return False, why + " (backend='eager' does)"
    if x.device.type != device_type:
        return False, f"it runs on {device_type} tensors{device_note}, got {x.device}"
    if str(x.dtype).replace("torch.", "") not in KERNEL_DTYPES:
        return False, f"it takes float32/bfloat16/float16 inputs, got {x.dtype}"
    for name, t in zip(("directions", "target samples"), tensors[1:]):
        if t.requires_grad:
            return False, f"{name} require grad, and its kernels do not differentiate them"
    return True, ""


def has_tangent(tensors: tuple) -> bool:
    """Whether any tensor is a forward-mode AD dual (inside ``torch.autograd.forward_ad.dual_level``)."""
    if forward_ad._current_level < 0:
        return False
    return any(isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def check_first_order(what: str) -> None:
    """Called at the start of a fused backward: raise when autograd wants its result differentiable
    (``create_graph=True``: double backward, gradient penalties), which fused backwards are not."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise RuntimeError(
            f"fused_sigreg: the fused backward of {what} is not differentiable, but create_graph=True asked for "
            "a differentiable gradient (double backward, gradient penalty); use backend='eager' for higher-order "
            "gradients"
        )


def lazy_op(stages: Callable[[], Dict[str, Callable]], name: str) -> Callable:
    """A stage implementation that calls ``stages()[name]``: ``stages`` imports the backend's module
    (with an import statement, which torch.compile traces) and returns its table of stages, so that
    registering a backend imports neither triton nor the extension."""

    def call(*args):
        return stages()[name](*args)

    return call
