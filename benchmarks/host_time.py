"""Host time of each op's CUDA-path Python per fwd+bwd, without a GPU: the Triton launches replaced by
no-ops, CPU tensors at a tiny size (so the torch ops left cost little beyond their own host time).

    TRITON_INTERPRET=1 python benchmarks/host_time.py [--op sigreg,visreg] [--calls 300]

At training sizes a GPU call is bound by this time (benchmarks/results/cuda/NOTES.md). Prints the best of
nine loops of ``--calls`` calls per op, beside the floor of an autograd fwd+bwd of one matmul.
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
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    stub_launches()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 8, 8, generator=gen).requires_grad_()
    a = random_directions(8, 8, gen)
    for op in args.op.split(","):
        loss = getattr(fs, op)
        us = best_us(lambda: loss(x, directions=a, backend="triton").backward(), args.calls)  # noqa: B023
        print(f"{op:20s} triton path, launches stubbed: {us:7.1f} us per fwd+bwd")
    floor = best_us(lambda: (x @ a).mean().backward(), args.calls)
    print(f"{'floor':20s} (x @ a).mean() fwd+bwd:          {floor:7.1f} us")


if __name__ == "__main__":
    main()
