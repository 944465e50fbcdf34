"""Fused Triton SIGReg against the eager reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1`` before triton is imported); with a CUDA device they run for real.
Inputs are fresh random each run (seed printed on failure).
"""
import os

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg import bench, memory, numerics
from fused_sigreg.check import check_problem
from fused_sigreg.problems import Shape, make_problem
from conftest import GPU, TRITON_DEVICE as DEVICE, rel_err
FP32_TOL = 1e-5


@pytest.fixture(autouse=True)
def triton_device():
    assert GPU or os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET=1 without a GPU"
    # fp32 parity is judged with ieee dots (the tf32 path has its own test)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def _inputs(rng, shape, K, dtype=torch.float32, scale=1.0):
    x = (torch.randn(*shape, generator=rng) * scale).to(DEVICE, dtype)
    a = torch.nn.functional.normalize(torch.randn(shape[-1], K, generator=rng), dim=0).to(DEVICE)
    return x, a


def _value_and_grads(x, a, backend, g=None, **kw):
    x = x.detach().requires_grad_()
    out = fs.sigreg(x, directions=a, backend=backend, **kw)
    weight = torch.ones_like(out) if g is None else g
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    return out.detach(), grad


CASES = [  # (x shape, K, (t_max, n_points)) — D and K off the block sizes, N = 2 included
    ((2, 5), 3, (3.0, 17)),
    ((5, 1), 1, (3.0, 17)),
    ((3, 2, 19), 33, (5.0, 9)),
    ((37, 19), 33, (3.0, 17)),
    ((3, 37, 70), 45, (5.0, 9)),
    ((300, 65), 129, (3.0, 17)),
    ((3, 300, 33), 20, (5.0, 9)),
    ((2, 37, 130), 17, (4.0, 13)),
]


@pytest.mark.parametrize("shape,K,quad", CASES, ids=lambda v: str(v))
def test_fp32_matches_eager(rng, shape, K, quad):
    x, a = _inputs(rng, shape, K)
    kw = dict(t_max=quad[0], n_points=quad[1], reduction=None)
    g = torch.rand((*shape[:-2], K), generator=rng).to(DEVICE)  # a random upstream gradient per slice
    value, grad = _value_and_grads(x, a, "triton", g, **kw)
    ref_value, ref_grad = _value_and_grads(x, a, "eager", g, **kw)
    assert rel_err(value, ref_value) <= FP32_TOL
    assert rel_err(grad, ref_grad) <= FP32_TOL


@pytest.mark.parametrize("kind", ["collapse", "near_constant", "large_projections"])
def test_fp32_hard_inputs(rng, kind):
    x, a = _inputs(rng, (2, 64, 24), 40)
    if kind == "collapse":          # the golden near-collapse case: everything shrunk toward 0
        x = x * 0.05
    elif kind == "near_constant":   # every sample almost the same vector
        x = x[:, :1] + 1e-3 * x
    else:                           # |p| up to ~50: the recurrence's worst range
        x = x * 12
    value, grad = _value_and_grads(x, a, "triton")
    ref_value, ref_grad = _value_and_grads(x, a, "eager")
    assert rel_err(value, ref_value) <= FP32_TOL
    # large |p|: both sides round t_j p differently (recurrence vs direct), ~1e-5 absolute per term
    assert rel_err(grad, ref_grad) <= (5e-5 if kind == "large_projections" else FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,K", [((3, 37, 20), 33), ((300, 65), 129)])
def test_16bit_within_budget(dtype, shape, K):
    """16-bit: error vs float64 within 2x of eager's with the directions rounded to the dtype."""
    problem = make_problem("sigreg", Shape(*((1,) + shape if len(shape) == 2 else shape), K), dtype, DEVICE,
                           seed=int(torch.randint(0, 2**31, (1,))))
    rows = {r["backend"]: r for r in check_problem(problem)}
    assert rows["triton"]["ok"], rows["triton"]


@pytest.mark.parametrize("i", range(7))
def test_golden_lejepa_cases(golden, i):
    case = golden["sigreg_lejepa"][i]
    x = case["x"].to(DEVICE).requires_grad_()
    value = fs.sigreg(x, directions=case["directions"].to(DEVICE), t_max=case["t_max"],
                      n_points=case["n_points"], reduction=case["reduction"], backend="triton")
    value.sum().backward()
    assert rel_err(value.cpu(), case["value"]) <= FP32_TOL
    assert rel_err(x.grad.cpu(), case["grad"]) <= FP32_TOL


def test_reductions_and_views(rng):
    x, a = _inputs(rng, (3, 40, 9), 11)
    per_slice = fs.sigreg(x, directions=a, reduction=None, backend="triton")
    assert per_slice.shape == (3, 11)
    assert torch.allclose(fs.sigreg(x, directions=a, backend="triton"), per_slice.mean())
    assert torch.allclose(fs.sigreg(x, directions=a, reduction="sum", backend="triton"), per_slice.sum())
    for v in range(3):  # views share directions and are independent otherwise
        assert rel_err(fs.sigreg(x[v], directions=a, reduction=None, backend="triton"), per_slice[v]) <= FP32_TOL


def test_auto_selection_and_refusals(rng):
    x, a = _inputs(rng, (20, 6), 5)
    assert fs.available_backends()["triton"] == (True, "")
    from fused_sigreg import dispatch

    chosen, _ = dispatch.select("ecf_means", (x, a))
    # auto prefers the fused kernel on CUDA tensors, but never routes work through the interpreter
    assert chosen == "triton" if GPU else chosen != "triton"
    # float64 and directions that require grad are served by eager under auto, refused when forced
    assert fs.sigreg(x.double(), directions=a.double()).dtype == torch.float64
    with pytest.raises(fs.BackendUnavailableError, match="float32/bfloat16/float16"):
        fs.sigreg(x.double(), directions=a.double(), backend="triton")
    a_grad = a.clone().requires_grad_()
    assert torch.allclose(fs.sigreg(x, directions=a_grad), fs.sigreg(x, directions=a, backend="eager"))
    with pytest.raises(fs.BackendUnavailableError, match="directions require grad"):
        fs.sigreg(x, directions=a_grad, backend="triton")


def test_tf32_path_rounds_operands(rng):
    """allow_tf32: the kernels round x and A to nearest tf32 before the dot; under the interpreter the
    dot is then exact, so the value equals eager on rounded operands."""
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the fixture
    x, a = _inputs(rng, (64, 40), 24)
    value, grad = _value_and_grads(x, a, "triton")
    ref_value, ref_grad = _value_and_grads(x, a, "eager")
    assert rel_err(value, ref_value) <= 1e-3 and rel_err(grad, ref_grad) <= 1e-2
    if not GPU:
        rounded, _ = _value_and_grads(numerics.round_to_tf32(x), numerics.round_to_tf32(a), "eager")
        assert rel_err(value, rounded) <= FP32_TOL


def test_opcheck(rng):
    from fused_sigreg.ops.sigreg_triton import ecf_means_triton

    x, a = _inputs(rng, (2, 33, 10), 7)
    for requires_grad in (False, True):
        torch.library.opcheck(ecf_means_triton, (x.clone().requires_grad_(requires_grad), a, 3.0, 17, False))
    torch.library.opcheck(ecf_means_triton, (x[0].clone().requires_grad_(), a, 5.0, 9, False))


def test_torch_compile(rng):
    x, a = _inputs(rng, (2, 33, 10), 7)
    fn = lambda v: fs.sigreg(v, directions=a, backend="triton")
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    value, grad = _value_and_grads_fn(compiled, x)
    ref_value, ref_grad = _value_and_grads_fn(fn, x)
    assert rel_err(value, ref_value) <= 1e-6 and rel_err(grad, ref_grad) <= 1e-6


def _value_and_grads_fn(fn, x):
    x = x.detach().requires_grad_()
    out = fn(x)
    (grad,) = torch.autograd.grad(out, x)
    return out.detach(), grad


def test_memory_matches_the_accounting():
    """Saved bytes equal the analytic count exactly; peak extra memory stays within the model."""
    from fused_sigreg.ops.sigreg_triton import forward_config

    for V, N, D, K, T in [(1, 50, 8, 16, 17), (3, 37, 5, 7, 9), (2, 130, 12, 40, 17)]:
        problem = make_problem("sigreg", Shape(V, N, D, K, T), device=DEVICE)
        for backend in ("triton", "eager"):
            measured = bench.saved_tensor_bytes(problem, backend)["saved_extra_bytes"]
            assert measured == memory.sigreg_saved_extra_bytes(backend, V, N, K, T), backend
        block_n = forward_config(V, N, K, problem.x.device).block_n
        fused_peak = bench.peak_extra_bytes(problem, "triton")
        assert fused_peak <= memory.sigreg_peak_extra_bytes_model("triton", V, N, D, K, T, block_n)
        eager_peak = bench.peak_extra_bytes(problem, "eager")
        model = memory.sigreg_peak_extra_bytes_model("eager", V, N, D, K, T)
        assert model <= eager_peak <= 1.2 * model + 64 * 1024


def test_recurrence_error_bound():
    """The fp32 recurrence stays within 2x (+1e-6) of direct fp32 cos/sin at every |p| up to 50."""
    for t_max, n_points in ((3.0, 17), (5.0, 9)):
        for row in numerics.recurrence_error(50.0, t_max, n_points, samples=20001):
            assert row["recurrence_max_abs_error"] <= 2 * row["direct_fp32_max_abs_error"] + 1e-6, row


def test_tf32_budget():
    """x and A rounded to nearest tf32 move SIGReg by < 1e-3 (value and gradient) at N=4096, D=K=512."""
    budget = numerics.tf32_budget(4096, 512, 512, mode="nearest")
    assert budget["value_rel_err"] < 1e-3 and budget["grad_rel_err"] < 1e-3
