"""pytest-benchmark suite: ``pytest benchmarks/ --benchmark-only`` (not part of ``make test``).

Each case times forward+backward of one op with one provider; peak extra memory and
saved-for-backward bytes go to ``extra_info``. Sizes are CPU-friendly; on a CUDA machine the
same cases run on the GPU.
"""

import pytest
import torch

from fused_sigreg import dispatch
from fused_sigreg.dispatch import OP_STAGES, OPS
from fused_sigreg.tools import bench
from fused_sigreg.tools.check import backends_for
from fused_sigreg.tools.problems import Shape, make_problem

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = [Shape(1, n, d, k) for n in (1024, 4096) for d in (128, 512) for k in (256,)] + [Shape(2, 2048, 256, 256)]


def _cases():
    for op in OPS:
        for shape in SHAPES:
            usable = backends_for(
                make_problem(op, Shape(shape.V, 8, shape.D, 4), device=DEVICE), include_emulated=False
            )
            providers = [name for name, b in dispatch.registered_backends().items() if OP_STAGES[op] in b.ops]
            for backend in providers:
                marks = [] if backend in usable else [pytest.mark.skip(reason=f"{backend}: not measured on {DEVICE}")]
                yield pytest.param(
                    op, shape, backend, marks=marks, id=f"{op}-{backend}-V{shape.V}-N{shape.N}-D{shape.D}-K{shape.K}"
                )


@pytest.mark.parametrize("op,shape,backend", list(_cases()))
def test_fwd_bwd(benchmark, op, shape, backend):
    problem = make_problem(op, shape, device=DEVICE)

    def fwd_bwd():
        problem.x.grad = None
        problem.loss(problem.x, backend).backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update(
        dict(
            device=str(DEVICE),
            op=op,
            backend=backend,
            V=shape.V,
            N=shape.N,
            D=shape.D,
            K=shape.K,
            peak_extra_bytes=bench.peak_extra_bytes(problem, backend),
            **bench.saved_tensor_bytes(problem, backend),
        )
    )
    benchmark.pedantic(fwd_bwd, rounds=5, warmup_rounds=1)
