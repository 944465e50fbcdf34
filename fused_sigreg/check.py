"""``python -m fused_sigreg check``: every usable backend against the eager reference.

For each op and backend the value and the input gradient of ``(loss * g)`` are compared with
eager at the same dtype; the eager row compares with a float64 eager run, which shows the
precision floor a backend is judged against (bf16: within 2x of it).
"""
from __future__ import annotations

from typing import Dict, List

import torch

from . import dispatch
from .problems import DISPATCHED_STAGE, Problem, Shape, make_problem

FP32_TOLERANCE = 1e-5


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


def backends_for(problem: Problem) -> List[str]:
    stage = DISPATCHED_STAGE[problem.op]
    names = []
    for name, backend in dispatch.registered_backends().items():
        if backend.verdict(stage, (problem.x, *problem.fixed.values()))[0]:
            names.append(name)
    return names


def check_problem(problem: Problem) -> List[Dict]:
    rows = []
    ref_value, ref_grad = value_and_grad(problem, problem.x, "eager")
    hi_value, hi_grad = value_and_grad(problem, problem.x.double(), "eager")
    for name in backends_for(problem):
        if name == "eager":
            value, grad, against = hi_value, hi_grad, "eager float64"
            value_err, grad_err = relative_error(ref_value, value), relative_error(ref_grad, grad)
        else:
            value, grad = value_and_grad(problem, problem.x, name)
            against = f"eager {problem.x.dtype}".replace("torch.", "")
            value_err, grad_err = relative_error(value, ref_value), relative_error(grad, ref_grad)
        rows.append(dict(op=problem.op, backend=name, dtype=str(problem.x.dtype).replace("torch.", ""),
                         shape="x".join(map(str, problem.x.shape)), against=against,
                         value_rel_err=value_err, grad_rel_err=grad_err))
    return rows


def passes(row: Dict, eager_floor: Dict) -> bool:
    """fp32/fp64: <= 1e-5; lower precisions: within 2x of eager's own error at that dtype."""
    errs = (row["value_rel_err"], row["grad_rel_err"])
    if row["backend"] == "eager":
        return all(e < float("inf") for e in errs)
    if row["dtype"] in ("float32", "float64"):
        return all(e <= FP32_TOLERANCE for e in errs)
    floor = (eager_floor["value_rel_err"], eager_floor["grad_rel_err"])
    return all(e <= max(2 * f, FP32_TOLERANCE) for e, f in zip(errs, floor))


def run_checks(ops, shape: Shape, dtype, device, seed: int = 0) -> List[Dict]:
    rows = []
    for op in ops:
        problem = make_problem(op, shape, dtype, device, seed)
        op_rows = check_problem(problem)
        floor = next(r for r in op_rows if r["backend"] == "eager")
        for row in op_rows:
            row["ok"] = passes(row, floor)
        rows.extend(op_rows)
    return rows
