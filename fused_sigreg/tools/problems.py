"""Random problem instances of each op, shared by ``check``, ``bench`` and the benchmark suite.

A problem fixes everything random (inputs, directions, RDMReg target samples) so that every
backend evaluates exactly the same function; only ``x`` is differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from .. import reference, univariate
from ..dispatch import OPS, STATISTICS, TOOL_OPS  # noqa: F401  (OPS: the benchmarks import it from here)
from ..ops import univariate as fused_univariate
from ..ops.rdmreg import rdmreg
from ..ops.sigreg import sigreg
from ..ops.sliced_wasserstein import sliced_wasserstein
from ..ops.visreg import visreg
from ..rgg import sample_rgg
from ..slicing import random_directions

# CLI spellings of an op besides its name
OP_ALIASES = {"swd": "sliced_wasserstein"}


@dataclass(frozen=True)
class Shape:
    V: int
    N: int
    D: int
    K: int
    T: int = 17  # SIGReg quadrature knots (t_max = 3)

    def input_shape(self):
        return (self.N, self.D) if self.V == 1 else (self.V, self.N, self.D)


@dataclass
class Problem:
    op: str
    shape: Shape
    x: torch.Tensor  # the differentiated input, (N, D) or (V, N, D)
    fixed: Dict[str, torch.Tensor]  # directions (D, K) and, for RDMReg, target samples

    def loss(self, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        """The op on x with this problem's fixed inputs; backend "compile" is ``compiled_reference``."""
        if backend == "compile":
            return compiled_reference(self.op, self.shape.T)(x, **self.fixed)
        return _CALLS[self.op](x, self, backend)

    def inputs(self):
        return [self.x, *self.fixed.values()]

    def rounded(self, dtype: torch.dtype) -> "Problem":
        """The same problem with its directions rounded to ``dtype`` (what 16-bit kernels multiply by)."""
        fixed = dict(self.fixed, directions=self.fixed["directions"].to(dtype).float())
        return Problem(self.op, self.shape, self.x, fixed)


def _sigreg_eager(n_points: int) -> Callable:
    return lambda x, directions: sigreg(x, directions=directions, n_points=n_points, backend="eager")


def _sliced_wasserstein_eager(x, directions):
    return sliced_wasserstein(x, directions=directions, backend="eager")


def _visreg_eager(x, directions):
    return visreg(x, directions=directions, backend="eager")


def _rdmreg_eager(x, directions, target):
    return rdmreg(x, directions=directions, target_samples=target, backend="eager")


def _statistic_eager(op: str) -> Callable:
    """The eager reference of a sliced statistic: mean over slices of lejepa's test on x @ W."""
    test = getattr(univariate, op)
    return lambda x, directions: test(reference.project(x, directions)).mean()


def _statistic_call(op: str) -> Callable:
    test = getattr(fused_univariate, op)
    return lambda x, p, b: test(reference.project(x, p.fixed["directions"]), backend=b).mean()


_COMPILED: Dict[tuple, Callable] = {}


def compiled_reference(op: str, n_points: int = 17) -> Callable:
    """``torch.compile(<eager reference of op>)`` with default settings, made once per (op, n_points):
    what an expert gets without us. Default settings compile for the shapes of the first call (static);
    call ``fresh_compiles()`` before each new size, so that every point is compiled for its own shapes as
    a training run with a fixed batch is. (Without it, dynamo's second shape would make the sizes
    dynamic, slower than static, and its recompile limit would run later sizes eagerly.)"""
    key = (op, n_points if op == "sigreg" else None)
    if key not in _COMPILED:
        fn = {
            "sigreg": _sigreg_eager(n_points),
            "sliced_wasserstein": _sliced_wasserstein_eager,
            "visreg": _visreg_eager,
            "rdmreg": _rdmreg_eager,
        }.get(op) or _statistic_eager(op)
        _COMPILED[key] = torch.compile(fn)
    return _COMPILED[key]


def fresh_compiles() -> None:
    """Forget every compiled reference and dynamo's caches: the next call compiles for its own shapes."""
    torch.compiler.reset()
    _COMPILED.clear()


def _sigreg_call(x, p, backend: Optional[str]):
    """``backend`` may carry SIGReg's memory mode after a colon: "triton:min" is
    ``sigreg(..., backend="triton", memory="min")``, the fully fused kernel."""
    name, _, memory = (backend or "").partition(":")
    return sigreg(
        x, directions=p.fixed["directions"], n_points=p.shape.T, backend=name or None, memory=memory or "auto"
    )


_CALLS: Dict[str, Callable] = {
    "sigreg": lambda x, p, b: _sigreg_call(x, p, b),
    "sliced_wasserstein": lambda x, p, b: sliced_wasserstein(x, directions=p.fixed["directions"], backend=b),
    "visreg": lambda x, p, b: visreg(x, directions=p.fixed["directions"], backend=b),
    "rdmreg": lambda x, p, b: rdmreg(x, directions=p.fixed["directions"], target_samples=p.fixed["target"], backend=b),
    **{op: _statistic_call(op) for op in STATISTICS},
}


def make_problem(op: str, shape: Shape, dtype=torch.float32, device="cpu", seed: int = 0) -> Problem:
    if op not in TOOL_OPS:
        raise ValueError(f"op must be one of {TOOL_OPS}, got {op!r}")
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape.input_shape(), generator=gen, device=device)
    fixed = {"directions": random_directions(shape.D, shape.K, gen, device=device)}
    if op == "rdmreg":
        x = torch.relu(x)
        fixed["target"] = sample_rgg(x.shape, generator=gen, device=device)
    return Problem(op, shape, x.to(dtype).requires_grad_(), fixed)
