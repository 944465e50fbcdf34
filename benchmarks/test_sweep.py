"""pytest-benchmark suite: ``make benchmarks`` (``pytest benchmarks/ --benchmark-only``; not part of ``make test``).

The same sweep points (``sweeps.SWEEPS``) and providers (``run.providers``: ``fused``, every usable
backend, ``compile``) as ``benchmarks/run.py``, one source for both; each case times forward +
backward of one op with one provider, and records peak extra memory and saved-for-backward bytes in
``extra_info``. On a CUDA machine the CUDA sweep runs, else the CPU one.
"""

import pytest
import torch

from fused_sigreg.dispatch import TOOL_OPS
from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, fresh_compiles, make_problem
from run import providers
from sweeps import SWEEPS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _cases():
    for op in TOOL_OPS:
        for shape, axis in SWEEPS[DEVICE][op]:
            # which providers serve the point depends on the op, device, dtype and N, not on D or K
            probe = make_problem(op, Shape(shape.V, shape.N, 1, 1), device=DEVICE)
            for provider in providers(probe):
                yield pytest.param(
                    op, shape, provider, id=f"{op}-{axis}-{provider}-V{shape.V}-N{shape.N}-D{shape.D}-K{shape.K}"
                )


@pytest.mark.parametrize("op,shape,provider", list(_cases()))
def test_fwd_bwd(benchmark, op, shape, provider):
    problem = make_problem(op, shape, device=DEVICE)
    backend = None if provider == "fused" else provider
    if provider == "compile":
        fresh_compiles()  # torch.compile's default: static shapes, compiled for this point in the warm-up round

    def fwd_bwd():
        problem.x.grad = None
        problem.loss(problem.x, backend).backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    extra = dict(device=DEVICE, op=op, provider=provider, V=shape.V, N=shape.N, D=shape.D, K=shape.K)
    if provider != "compile":  # memory is measured through the dispatcher's backends
        extra.update(
            peak_extra_bytes=bench.peak_extra_bytes(problem, backend), **bench.saved_tensor_bytes(problem, backend)
        )
    benchmark.extra_info.update(extra)
    benchmark.pedantic(fwd_bwd, rounds=5, warmup_rounds=1)
