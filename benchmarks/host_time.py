"""Host time of each op per fwd+bwd, without a GPU, at a tiny size (V=10, N=D=K=8: the torch ops cost little
beyond their own host time): the triton backend's Python (the CUDA path's) with its Triton launches replaced
by no-ops, and the cpu and eager backends as they are.

    TRITON_INTERPRET=1 python benchmarks/host_time.py [--op sigreg,visreg] [--backend triton,cpu] [--calls 300]

At training sizes a GPU call is bound by this time (benchmarks/results/cuda/NOTES.md), and a CPU call at
small batches largely. Prints the best of nine loops of ``--calls`` calls per op and backend, beside the
floor of an autograd fwd+bwd of one matmul.
"""

import argparse
import importlib
import os
import pkgutil
import time

import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    raise SystemExit("set TRITON_INTERPRET=1: the triton backend serves CPU tensors only in the interpreter")

import fused_sigreg as fs  # noqa: E402
import fused_sigreg.backends.triton as triton_backend  # noqa: E402
from fused_sigreg.slicing import random_directions  # noqa: E402


def stub_launches() -> None:
    for info in pkgutil.iter_modules(triton_backend.__path__):
        module = importlib.import_module(f"{triton_backend.__name__}.{info.name}")
        if hasattr(module, "launch"):
            module.launch = lambda *args, **kwargs: None


def best_us(fn, calls: int) -> float:
    for _ in range(30):
        fn()
    best = float("inf")
    for _ in range(9):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", default="sigreg,sliced_wasserstein,visreg,rdmreg")
    parser.add_argument("--backend", default="triton,cpu,eager")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    stub_launches()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 8, 8, generator=gen).relu().requires_grad_()  # RDMReg's input is non-negative
    a = random_directions(8, 8, gen)
    extra = {"rdmreg": {"target_samples": fs.sample_rgg(x.shape, generator=gen)}}
    what = {"triton": "triton path, launches stubbed", "cpu": "cpu backend", "eager": "eager backend"}
    for op in args.op.split(","):
        loss = getattr(fs, op)
        for backend in args.backend.split(","):
            kwargs = dict(directions=a, backend=backend, **extra.get(op, {}))
            us = best_us(lambda: loss(x, **kwargs).backward(), args.calls)  # noqa: B023
            print(f"{op:20s} {what[backend]:30s} {us:7.1f} us per fwd+bwd")
    floor = best_us(lambda: (x @ a).mean().backward(), args.calls)
    print(f"{'floor':20s} {'(x @ a).mean() fwd+bwd':30s} {floor:7.1f} us")


if __name__ == "__main__":
    main()
