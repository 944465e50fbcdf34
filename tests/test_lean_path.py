"""The lean path's rules on this CPU-only machine: what one fwd+bwd of each public op dispatches.

The same Python path as on a GPU (the triton backend runs in Triton's interpreter on CPU tensors; the
cpu backend natively) is recorded by a ``TorchDispatchMode``. A host sync shows as
``_local_scalar_dense`` (``.item()``, ``bool(t)``, ``.tolist()``) and a host value written into a tensor
as ``lift_fresh`` (``torch.tensor(...)``: on CUDA a synchronous copy); allocator queries are patched
to raise. On a GPU the same test runs for real (``torch.cuda.set_sync_debug_mode("error")``).

Rules (docs/design.md §8, "The lean path"): the functional ops make no host sync with ``directions=``,
``projections=``, ``step=`` (SIGReg) or ``generator=``; a module makes exactly one, the read of its
``global_step`` buffer (so that the step used is the buffer's value however it was written; lejepa's
module makes the same one). Call-invariant tensors (knots, weights, quantile targets) are built once,
so a warm call dispatches none of their ops. Kernels per call are counted and held to the numbers in
``KERNELS`` (a ratchet: lower them as the path gets leaner).
"""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fused_sigreg as fs
from fused_sigreg import dispatch
from fused_sigreg.tools import roofline
from helpers import GPU, TRITON_DEVICE, rel_err

# ops that only describe or allocate memory, which launch no kernel
NO_KERNEL = {
    "view",
    "_unsafe_view",
    "reshape",
    "transpose",
    "t",
    "expand",
    "unsqueeze",
    "squeeze",
    "select",
    "slice",
    "as_strided",
    "detach",
    "alias",
    "permute",
    "split",
    "unbind",
    "narrow",
    "_reshape_alias",
    "empty",
    "empty_like",
    "new_empty",
    "empty_strided",
    "lift_fresh",
}
SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "equal"}
# the extension's composite ops (csrc/sort_match_loss.cpp): one call here, their aten kernels below the
# mode, counted as those kernels (forward: mm, the layout's copy, sort_match, sum, div; backward: the
# multiply by grad_out and baddbmm on CUDA, bmm and the in-place scale of its output on the CPU)
COMPOSITE_KERNELS = {"sort_match_loss": 5, "sort_match_loss_backward": 2}
ALLOCATOR_QUERIES = ("memory_stats", "mem_get_info", "memory_allocated", "memory_reserved", "max_memory_allocated")


class Recorder(TorchDispatchMode):
    """Every op dispatched at the top level (a custom op counts once: its launcher's own launches run
    below the mode)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func))
        return func(*args, **(kwargs or {}))


def _inputs(op, dtype, device, V=2, N=24, D=16, K=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(V, N, D, generator=g)
    if op == "rdmreg":
        x = x.relu()
    a = torch.nn.functional.normalize(torch.randn(D, K, generator=g), dim=0)
    extra = {"target_samples": torch.rand(V, N, D, generator=g).to(device)} if op == "rdmreg" else {}
    return x.to(device, dtype).requires_grad_(), a.to(device), extra


MODULES = {"sigreg": fs.SIGReg, "sliced_wasserstein": fs.SlicedWasserstein, "visreg": fs.VISReg, "rdmreg": fs.RDMReg}


def _call(op, usage, backend, x, a, extra):
    """One fwd+bwd of ``op`` used in ``usage``; returns nothing (the gradient lands in x.grad)."""
    f = getattr(fs, op)
    k = a.shape[1]
    if usage == "module":
        module = MODULES[op](k, backend=backend)
        return lambda: _fresh_grad(x) or module(x).backward()
    if usage == "directions":
        kwargs = {"directions": a, **extra}
    elif usage == "projections":
        kwargs = {"projections": a.t().contiguous(), **extra}
    elif usage == "step":
        kwargs = {"num_slices": k, "step": 3}
    else:
        gen = torch.Generator(device=x.device).manual_seed(1)
        kwargs = {("num_slices" if op == "sigreg" else "num_projections"): k, "generator": gen, **extra}
    return lambda: _fresh_grad(x) or f(x, backend=backend, **kwargs).backward()


def _fresh_grad(x):
    # x stands for a model's output: no gradient accumulates into it between steps
    x.grad = None


def _record(fn, monkeypatch):
    def refuse(name):
        def query(*args, **kwargs):
            raise AssertionError(f"allocator query torch.cuda.{name} on the hot path")

        return query

    for name in ALLOCATOR_QUERIES:
        monkeypatch.setattr(torch.cuda, name, refuse(name))
    fn()  # warm: caches filled, kernels compiled
    recorder = Recorder()
    with recorder:
        fn()
    return recorder.ops


USAGES = {
    op: ["directions", "projections", "generator", "module"] + (["step"] if op == "sigreg" else []) for op in MODULES
}
CASES = [(op, usage) for op in MODULES for usage in USAGES[op]]

# Top-level kernels per warm fwd+bwd, directions given, measured with this test (a custom op counts
# once; its launcher's own launches are not seen here). The triton rows are the CUDA path's Python.
# #22's targets: SIGReg, SWD, RDMReg <= 8 (fp32) / 10 (16-bit); VISReg <= 12 / 14: the triton rows meet
# them; 16-bit input adds a cast each way. SIGReg (triton): mm, the ECF-and-statistic op, the mean; backward:
# ones_like, the dP op (which takes the mean's gradient as it is), mm; the cpu row multiplies the
# coefficients by that gradient in torch (2 ops) before its C++ pass. SWD: mm, the match op, sum, div;
# backward: ones_like, the saved gradient's multiply, one scaled batched matmul (RDMReg: one more mm, of
# the targets). VISReg: the reference's mean, centring and norm, the terms op, mm, the match op, sum,
# add; backward: ones_like, multiply, batched matmul, the terms' backward op.
KERNELS = {
    "triton": roofline.KERNELS_PER_CALL,  # the roofline's launch term counts the same kernels
    # the extension's layout adds a transpose copy of P (and of the targets' projections for RDMReg)
    "cpu": {"sigreg": (8, 10), "sliced_wasserstein": (8, 10), "visreg": (12, 14), "rdmreg": (10, 12)},
}


def _backends():
    out = ["cpu", "triton"]
    return [b for b in out if fs.available_backends()[b][0]]


# triton (the CUDA path's Python): every usage in float32, 16-bit input (which adds only casts) with
# directions=; cpu: what differs there, its ops, with directions=
SYNC_CASES = [(op, usage, torch.float32, "triton") for op, usage in CASES]
SYNC_CASES += [
    (op, "directions", dtype, backend)
    for op in MODULES
    for dtype, backend in ((torch.bfloat16, "triton"), (torch.float32, "cpu"), (torch.bfloat16, "cpu"))
]


@pytest.mark.parametrize(
    "op,usage,dtype,backend", SYNC_CASES, ids=[f"{o}-{u}-{str(d)[6:]}-{b}" for o, u, d, b in SYNC_CASES]
)
def test_no_host_sync_and_no_rebuilt_invariants(op, usage, dtype, backend, monkeypatch):
    if backend not in _backends():
        pytest.skip(f"backend {backend!r} is not usable here")
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    x, a, extra = _inputs(op, dtype, device)
    ops = _record(_call(op, usage, backend, x, a, extra), monkeypatch)
    syncs = [o for o in ops if o in SYNCS]
    # a module reads its global_step once per call; nothing else syncs
    assert syncs == (["_local_scalar_dense"] if usage == "module" else []), collections.Counter(ops)
    assert "lift_fresh" not in ops, "a tensor built from host values per call"
    # knots, weights and quantile targets come from the cache: none of their builders run warm
    assert not {"linspace", "erfinv", "arange"} & set(ops), collections.Counter(ops)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", list(MODULES))
def test_kernels_per_call_stay_within_the_ratchet(op, dtype, backend, monkeypatch):
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    x, a, extra = _inputs(op, dtype, device)
    ops = _record(_call(op, "directions", backend, x, a, extra), monkeypatch)
    kernels = [o for o in ops if o not in NO_KERNEL]
    limit = KERNELS[backend][op][0 if dtype == torch.float32 else 1]
    assert sum(COMPOSITE_KERNELS.get(o, 1) for o in kernels) <= limit, collections.Counter(kernels)


@pytest.mark.skipif(not GPU, reason="a CUDA device runs the same calls under set_sync_debug_mode('error')")
@pytest.mark.parametrize(
    "op,usage", [c for c in CASES if c[1] != "module"], ids=[f"{op}-{u}" for op, u in CASES if u != "module"]
)
def test_no_sync_on_a_gpu(op, usage):
    x, a, extra = _inputs(op, torch.float32, "cuda")
    fn = _call(op, usage, None, x, a, extra)
    fn()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")


assert set(MODULES) == set(dispatch.OPS)


# lejepa's univariate statistics on the projections x @ W (fused_sigreg.ops.univariate), one fwd+bwd of
# their mean: the projection and its backward (2 mm), one custom op, the mean and its backward (3) and the
# one-multiply backward of the op; the cpu sort op adds the extension's (S, N) layout (a copy each way).
# NLL's backward is a multiply and a gather (its output i depends on one input row, not on a column).
# Measured with this test.
STATISTIC_KERNELS = {"cpu": 9, "triton": 7}
BACKWARD_GATHER = {"nll": 1}


def _statistic_cases():
    for backend in ("cpu", "triton"):
        for name in dispatch.STATISTICS:
            if name in dispatch.REGISTRY.backends[backend].ops:
                yield pytest.param(backend, name, id=f"{backend}-{name}")


@pytest.mark.parametrize("backend,name", list(_statistic_cases()))
def test_statistics_make_no_host_sync_and_few_kernels(backend, name, monkeypatch):
    from fused_sigreg.ops import univariate as fused

    if backend not in _backends():
        pytest.skip(f"backend {backend!r} is not usable here")
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    x, a, _ = _inputs("sigreg", torch.float32, device, N=40)
    statistic = getattr(fused, name)
    ops = _record(lambda: _fresh_grad(x) or statistic(x @ a, backend=backend).mean().backward(), monkeypatch)
    assert not [o for o in ops if o in SYNCS] and "lift_fresh" not in ops, collections.Counter(ops)
    # Shapiro-Wilk's weights come from the cache: none of their builders run warm
    assert not {"linspace", "erfinv", "arange"} & set(ops), collections.Counter(ops)
    kernels = [o for o in ops if o not in NO_KERNEL]
    assert len(kernels) <= STATISTIC_KERNELS[backend] + BACKWARD_GATHER.get(name, 0), collections.Counter(kernels)


@pytest.mark.skipif(not GPU, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("op", list(MODULES))
def test_cuda_graph_capture_and_replay_equal_the_eager_call(op):
    """fwd+bwd of each op (default backend, directions given) captured in one CUDA graph: a replay on new
    input data gives the loss and gradient of an ordinary call on that data (no host sync may occur in
    capture, and call-invariant tensors must already exist: the warm-up builds them)."""
    x, a, extra = _inputs(op, torch.float32, "cuda")
    f = getattr(fs, op)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            x.grad = None
            f(x, directions=a, **extra).backward()
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = f(x, directions=a, **extra)
        loss.backward()
    fresh = torch.randn(x.shape, device="cuda")
    fresh = fresh.relu() if op == "rdmreg" else fresh
    with torch.no_grad():
        x.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    want_x = fresh.clone().requires_grad_()
    want = f(want_x, directions=a, **extra)
    want.backward()
    assert rel_err(loss, want) <= 1e-6 and rel_err(x.grad, want_x.grad) <= 1e-6
