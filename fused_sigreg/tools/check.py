"""``python -m fused_sigreg check``: every usable backend against the eager reference.

For each op and backend the value and the input gradient of ``(loss * g)`` are compared with
eager at the same dtype; the eager row compares with a float64 eager run, which shows the
precision floor a backend is judged against (bf16: within 2x of it).
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Optional

import torch
from torch.overrides import TorchFunctionMode

from .. import dispatch
from ..backends.triton.configs import NEW_TF32_API, fp32_matmul_uses_tf32
from ..dispatch import STAGE_OF
from .numerics import round_to_tf32
from .problems import Problem, Shape, make_problem

FP32_TOLERANCE = 1e-5
LOW_PRECISION = (torch.bfloat16, torch.float16)


# How sort-op gradients are judged: where projections of a slice tie exactly, which tied row gets which
# target is a convention (torch.sort's order is unspecified); values do not depend on it, gradients do.
TIE_RULE = (
    "sort ops' gradients are judged against the eager reference with a stable sort (tied projections keep "
    "their row order, -0 == +0), the fused kernels' tie rule; values do not depend on the order of ties"
)


class StableSort(TorchFunctionMode):
    """Inside the block every ``torch.sort`` / ``Tensor.sort`` is stable: the eager reference, unchanged,
    with the fused kernels' tie rule (``TIE_RULE``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.sort, torch.Tensor.sort):
            kwargs["stable"] = True
        return func(*args, **kwargs)


def reference_rule(problem: "Problem"):
    """The context the eager reference runs in for ``problem``: ``StableSort`` for the sort ops."""
    return StableSort() if problem.op != "sigreg" else contextlib.nullcontext()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|; NaN anywhere gives inf so that NaN never passes."""
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def value_and_grad(problem: Problem, x: torch.Tensor, backend: str):
    x = x.detach().requires_grad_()
    loss = problem.loss(x, backend)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def backends_for(problem: Problem, include_emulated: bool = True) -> List[str]:
    """Backends that can serve this problem's dispatched stage (emulated ones optionally left out)."""
    stage = STAGE_OF[problem.op]
    names = []
    registry = dispatch.REGISTRY
    for name, backend in registry.backends.items():
        usable = registry.verdict(backend, stage, (problem.x, *problem.fixed.values()))[0]
        if usable and (include_emulated or not backend.emulated()):
            names.append(name)
    return names


def unmeasured_backends(problem: Problem) -> Dict[str, str]:
    """Backends that implement this problem's stage but cannot be timed here, with the reason
    (benchmarks list them as "not measured" rather than leaving them out)."""
    stage = STAGE_OF[problem.op]
    out = {}
    registry = dispatch.REGISTRY
    for name, backend in registry.backends.items():
        if stage not in backend.ops:
            continue
        ok, why = registry.verdict(backend, stage, (problem.x, *problem.fixed.values()))
        if ok and backend.emulated():
            ok, why = False, "it runs in an emulator (Triton's interpreter) here"
        if not ok:
            out[name] = why
    return out


# SIGReg's fully fused Triton kernel (sigreg(..., backend="triton", memory="min")): checked and timed
# beside the triton backend's default path wherever that one can run.
FULLY_FUSED = "triton:min"


def providers_for(problem: Problem, include_emulated: bool = True) -> List[str]:
    """``backends_for`` plus, for SIGReg where ``triton`` serves, ``"triton:min"``."""
    names = backends_for(problem, include_emulated)
    if problem.op == "sigreg" and "triton" in names:
        names.append(FULLY_FUSED)
    return names


def _row(problem: Problem, backend: str, against: str, errors) -> Dict:
    return dict(
        op=problem.op,
        backend=backend,
        dtype=str(problem.x.dtype).replace("torch.", ""),
        shape="x".join(map(str, problem.x.shape)),
        against=against,
        value_rel_err=errors[0],
        grad_rel_err=errors[1],
    )


def _errors(got, want, dtype=None):
    value, grad = got
    if dtype is not None:  # compare gradients as the backend returns them
        grad = grad.to(dtype)
    return relative_error(value, want[0]), relative_error(grad, want[1])


def check_problem(problem: Problem, only: Optional[List[str]] = None) -> List[Dict]:
    """One row per usable backend (those named in ``only``, when given), each with ``ok``.

    fp32/fp64: value and gradient against eager at the same dtype, <= 1e-5 (the eager row shows
    eager's own error against float64). 16-bit: every backend against float64 truth, within 2x of
    the error of eager run with the directions rounded to the input dtype, which is what 16-bit
    tensor-core kernels compute, and never below the fp32 tolerance: after rounding its inputs a
    kernel computes in fp32, whose own rounding (<= 1e-5, the fp32 parity bound) a case where eager
    happens to be exact (e.g. D = 1) cannot be asked to beat.
    """
    dtype = problem.x.dtype
    with reference_rule(problem):
        truth = value_and_grad(problem, problem.x.double(), "eager")
    rows = []
    if dtype == torch.float32 and problem.x.is_cuda and fp32_matmul_uses_tf32():
        return _check_tf32(problem, truth)
    if dtype in LOW_PRECISION:
        with reference_rule(problem):
            budget = _errors(value_and_grad(problem.rounded(dtype), problem.x.double(), "eager"), truth, dtype)
        for name in providers_for(problem):
            if only is not None and name not in only:
                continue
            row = _row(problem, name, "eager float64", _errors(value_and_grad(problem, problem.x, name), truth))
            row["budget"] = f"2x {budget[0]:.2g}, {budget[1]:.2g}"
            row["ok"] = all(
                e <= max(2 * b, FP32_TOLERANCE) for e, b in zip((row["value_rel_err"], row["grad_rel_err"]), budget)
            )
            rows.append(row)
        return rows
    with reference_rule(problem):
        ref = value_and_grad(problem, problem.x, "eager")
    for name in providers_for(problem):
        if only is not None and name not in only:
            continue
        if name == "eager":
            row = _row(problem, name, "eager float64", _errors(ref, truth))
            row["ok"] = all(e < float("inf") for e in (row["value_rel_err"], row["grad_rel_err"]))
        else:
            against = f"eager {dtype}".replace("torch.", "")
            row = _row(problem, name, against, _errors(value_and_grad(problem, problem.x, name), ref))
            row["ok"] = row["value_rel_err"] <= FP32_TOLERANCE and row["grad_rel_err"] <= FP32_TOLERANCE
        rows.append(row)
    return rows


def _check_tf32(problem: Problem, truth) -> List[Dict]:
    """fp32 with tf32 matmuls (CUDA): every backend against float64 truth, within 2x of the larger of
    eager's own error under the same setting and eager's error with x and the directions rounded to
    tf32 (computed in fp32 without tf32), and never below the fp32 tolerance. Both kinds of kernel round
    x, A and dP to tf32."""

    with reference_rule(problem):
        eager = _errors(value_and_grad(problem, problem.x, "eager"), truth)
    rounded_problem = Problem(
        problem.op, problem.shape, problem.x, dict(problem.fixed, directions=round_to_tf32(problem.fixed["directions"]))
    )
    with tf32_disabled(), reference_rule(problem):
        rounded = _errors(value_and_grad(rounded_problem, round_to_tf32(problem.x), "eager"), truth)
    budget = tuple(max(e, r) for e, r in zip(eager, rounded))
    rows = []
    for name in providers_for(problem):
        errors = eager if name == "eager" else _errors(value_and_grad(problem, problem.x, name), truth)
        row = _row(problem, name, "eager float64", errors)
        row["dtype"] = "float32 (tf32)"
        row["budget"] = f"2x {budget[0]:.2g}, {budget[1]:.2g}"
        row["ok"] = all(e <= max(2 * b, FP32_TOLERANCE) for e, b in zip(errors, budget))
        rows.append(row)
    return rows


@contextlib.contextmanager
def tf32_enabled(on: bool = True):
    """fp32 matmuls in tf32 (or not) inside the block, through whichever API this torch has."""
    matmul = torch.backends.cuda.matmul
    if NEW_TF32_API:
        saved = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if on else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:
        saved = matmul.allow_tf32
        matmul.allow_tf32 = on
        try:
            yield
        finally:
            matmul.allow_tf32 = saved


def tf32_disabled():
    return tf32_enabled(False)


def run_checks(ops, shape: Shape, dtype, device, seed: int = 0) -> List[Dict]:
    rows = []
    for op in ops:
        rows.extend(check_problem(make_problem(op, shape, dtype, device, seed)))
    return rows
