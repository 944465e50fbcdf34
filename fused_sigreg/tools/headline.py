"""SIGReg head to head, the first thing a GPU machine prints: ``python -m fused_sigreg headline``.

At the sweep's base point, two LeJEPA training points (V = 10, bfloat16) and N = 32768, every way a user
can compute SIGReg — our default path, the fully fused kernel (``memory="min"``), the eager reference,
``torch.compile`` (default settings) of the reference and ``torch.compile(fs.sigreg)``, and in the
host-bound regime's terms our default path in a CUDA graph beside ``torch.compile(reference,
mode="reduce-overhead")`` — is judged against float64 (value and gradient) and timed forward + backward.
On CUDA each row also has the GPU-busy time (the profiler's kernel sum per call), the device kernels per
call and the host syncs per call (``torch.cuda.set_sync_debug_mode``). On a CPU (``--device cpu``) the
same code runs at stand-in sizes: kernels are the aten ops dispatched per call, syncs the host reads
(``_local_scalar_dense``), and GPU-busy is "n/a". Each measurement that fails says why in its cell and
the rest still prints; the last line is the verdict.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from .. import reference
from ..dispatch import BackendUnavailableError
from ..ops.sigreg import sigreg
from ..slicing import random_directions
from .check import relative_error
from .counts import cpu_counts, cuda_counts


@dataclass(frozen=True)
class Point:
    name: str
    V: int
    N: int
    D: int
    K: int
    dtype: torch.dtype

    def input_shape(self):
        return (self.N, self.D) if self.V == 1 else (self.V, self.N, self.D)


# the sweep's CUDA base point; LeJEPA's recommended training points (paper, Table 1: V = 2 + 8 views,
# projector 128, 1024-4096 slices, bf16, tens to hundreds of samples per GPU); the largest N of the paper
POINTS = {
    "cuda": (
        Point("base", 1, 8192, 512, 512, torch.float32),
        Point("LeJEPA N=64", 10, 64, 128, 1024, torch.bfloat16),
        Point("LeJEPA N=256", 10, 256, 128, 4096, torch.bfloat16),
        Point("N=32768", 1, 32768, 512, 512, torch.float32),
    ),
    # stand-ins with the same structure at sizes a 2-core machine times in seconds
    "cpu": (
        Point("base (stand-in)", 1, 1024, 128, 128, torch.float32),
        Point("LeJEPA N=64 (stand-in)", 10, 64, 64, 256, torch.bfloat16),
        Point("LeJEPA N=256 (stand-in)", 10, 256, 64, 512, torch.bfloat16),
        Point("N=32768 (stand-in)", 1, 4096, 128, 128, torch.float32),
    ),
}


def _eager(x, a):
    return sigreg(x, directions=a, backend="eager")


# the ways that are this package's (their errors decide the verdict); the others are the peers
OURS = ("fused_sigreg", "fully fused (memory='min')", "torch.compile(fs.sigreg)", "fused_sigreg in a CUDA graph")


class _Graphed:
    """f(x, directions) as ``torch.cuda.make_graphed_callables`` makes it: forward and backward each one
    graph replay (plus the copy of x into the graph's input), captured once per point. At training sizes a
    call is host-bound, and graph replay is how a training loop removes that (``torch.compile(...,
    mode="reduce-overhead")`` does the same for the compiled reference)."""

    def __init__(self, fn: Callable):
        self.fn, self.key, self.graphed = fn, None, None

    def __call__(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            raise BackendUnavailableError("CUDA graphs need a CUDA device")
        key = (x.shape, x.dtype, x.device, a.data_ptr())
        if key != self.key:
            fn = self.fn
            sample = x.detach().clone().requires_grad_(x.requires_grad)
            self.graphed = torch.cuda.make_graphed_callables(lambda v: fn(v, a), (sample,))
            self.key = key
        return self.graphed(x)


def providers() -> Dict[str, Callable]:
    """Each way to compute SIGReg, as f(x, directions) -> scalar."""
    compiled_reference = torch.compile(_eager)
    compiled_op = torch.compile(lambda x, a: sigreg(x, directions=a))
    reduce_overhead = torch.compile(_eager, mode="reduce-overhead")
    return {
        "fused_sigreg": lambda x, a: sigreg(x, directions=a),
        "fully fused (memory='min')": lambda x, a: sigreg(x, directions=a, memory="min"),
        "eager reference": _eager,
        "torch.compile(reference)": compiled_reference,
        "torch.compile(fs.sigreg)": compiled_op,
        "fused_sigreg in a CUDA graph": _Graphed(lambda x, a: sigreg(x, directions=a)),
        "torch.compile(reference, mode='reduce-overhead')": _cuda_only(reduce_overhead),
    }


def _cuda_only(fn: Callable) -> Callable:
    """fn for CUDA inputs; elsewhere the row says why it did not run (reduce-overhead is CUDA graphs)."""

    def run(x, a):
        if not x.is_cuda:
            raise BackendUnavailableError("CUDA graphs need a CUDA device")
        return fn(x, a)

    return run


def _fwd_bwd(fn, x, a):
    x.grad = None
    fn(x, a).backward()


def _time_ms(fn, x, a, device, repeats: int) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(lambda: _fwd_bwd(fn, x, a))
    samples = []
    for i in range(repeats + 1):  # one warm-up call
        t0 = time.perf_counter()
        _fwd_bwd(fn, x, a)
        if i:
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _cuda_counts(fn, x, a):
    """(GPU-busy ms per call, device kernels per call, host syncs per call)."""
    return cuda_counts(lambda: _fwd_bwd(fn, x, a))


def _cpu_counts(fn, x, a):
    ops, reads = cpu_counts(lambda: _fwd_bwd(fn, x, a))
    return "n/a", ops, reads


def _reason(e: Exception) -> str:
    if isinstance(e, BackendUnavailableError):
        return f"not available: {e}"
    return f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"


def _cell(fn: Callable, *args):
    """fn(*args), or the reason it failed as the cell's text."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the table must still print every other cell
        return _reason(e)


def run_point(point: Point, device: torch.device, repeats: int, ways: Dict[str, Callable]) -> List[Dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    x32 = torch.randn(point.input_shape(), generator=gen, device=device)
    a = random_directions(point.D, point.K, gen, device=device)
    x = x32.to(point.dtype)
    # the ground truth: float64 on the very values the call sees (16-bit input rounded once)
    x64 = x.detach().double().requires_grad_()
    truth = reference.sliced_epps_pulley(x64, a.double())
    (truth_grad,) = torch.autograd.grad(truth, x64)
    rows, eager_err = [], None
    torch.compiler.reset()  # default compile settings: static shapes at this point, compiled here
    for name, fn in ways.items():
        row = {"point": point.name, "way": name, "dtype": str(point.dtype).replace("torch.", "")}
        xi = x.detach().requires_grad_()
        try:
            value = fn(xi, a)
            (grad,) = torch.autograd.grad(value, xi)
        except Exception as e:  # noqa: BLE001 - e.g. memory="min" on a CPU: the row says why
            reason = _reason(e)
            row["status"], row["why"] = reason.split(":")[0], reason
            rows.append(row)
            continue
        err = max(relative_error(value, truth), relative_error(grad, truth_grad))
        if name == "eager reference":
            eager_err = err
        row["err_vs_fp64"] = err
        row["ms"] = _cell(_time_ms, fn, xi, a, device, repeats)
        counts = _cell(_cuda_counts if device.type == "cuda" else _cpu_counts, fn, xi, a)
        if isinstance(counts, tuple):
            row["gpu_busy_ms"], row["kernels"], row["syncs"] = counts
        else:
            row["kernels"] = counts
        rows.append(row)
    # the budget of check: within 2x of the eager reference's own error at this dtype, never below 1e-5
    budget = max(2 * (eager_err or 0.0), 1e-5)
    for row in rows:
        if "err_vs_fp64" in row:
            row["budget"] = budget
            within = row["err_vs_fp64"] <= budget
            row["status"] = "ok" if within else ("OVER BUDGET" if row["way"] in OURS else "over budget (peer)")
    return rows


def headline(device: torch.device, repeats: int = 5, points: Optional[List[Point]] = None) -> List[Dict]:
    ways = providers()
    rows = []
    for point in points or POINTS[device.type]:
        rows.extend(run_point(point, device, repeats, ways))
    return rows


def verdict(rows: List[Dict]) -> str:
    """One line: ok when every way of ours that ran is within budget and nothing failed (a way not
    available here is not a failure; a peer over budget is reported in its row, not here)."""
    over = [f"over budget: {r['way']} at {r['point']}" for r in rows if r.get("status") == "OVER BUDGET"]
    failed = [f"{r['why']} ({r['way']} at {r['point']})" for r in rows if r.get("status") == "failed"]
    failed += [
        f"{r['way']} at {r['point']}: {r[k]}"
        for r in rows
        for k in ("ms", "kernels")
        if isinstance(r.get(k), str) and r[k].startswith("failed")
    ]
    if over or failed:
        return "headline: FAILED - " + "; ".join(over + failed)
    return "headline: ok (every way of ours that runs here is within the float64 budget)"


def reasons(rows: List[Dict]) -> List[str]:
    """The distinct reasons a way did not run, one line each."""
    return list(dict.fromkeys(f"{r['way']}: {r['why']}" for r in rows if "why" in r))
