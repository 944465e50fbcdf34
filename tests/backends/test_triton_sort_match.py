"""Triton sort-and-match (SWD, VISReg, RDMReg) against the eager reference and a stable torch.sort.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1``), where one program sorts ~128 values in ~0.2 s: sizes stay small.
Inputs are fresh random each run (seed printed on failure).
"""

import pytest
import torch

pytest.importorskip("triton", reason="the triton backend needs triton")

import fused_sigreg as fs
from fused_sigreg import dispatch
from fused_sigreg.backends.extension import library as extension
from fused_sigreg.backends.triton.configs import MAX_SORT_N, SORT_CONFIGS, sort_config
from fused_sigreg.backends.triton.sort_match import sort_match_triton
from fused_sigreg.slicing import normal_quantiles
from fused_sigreg.tools import bench
from fused_sigreg.tools.check import check_problem
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import SORT_OPS, hard_values, rel_err, stable_sort_formula
from helpers import TRITON_DEVICE as DEVICE

FP32_TOL = 1e-5
pytestmark = pytest.mark.usefixtures("triton_device")


def _stable_match(proj, target):
    """Per-slice sums of squares and their gradient, (V, N, K) layout, by autograd through a stable
    torch.sort in float64."""
    p = proj.detach().cpu().double().requires_grad_()
    t = target.cpu().double()
    t = torch.sort(t, dim=1, stable=True).values if t.dim() == 3 else t[:, None]
    sum_sq = (torch.sort(p, dim=1, stable=True).values - t).square().sum(dim=1)
    sum_sq.sum().backward()
    return sum_sq.detach(), p.grad


# the last two: K across several column tiles, the last one partial (BLOCK_S = 8 up to N = 256, 4 at 512)
SHAPES = [(1, 2, 3), (3, 3, 2), (1, 37, 5), (3, 37, 2), (1, 129, 3), (2, 37, 9), (1, 300, 5)]


@pytest.mark.parametrize("two_sample", [False, True], ids=["quantiles", "two-sample"])
@pytest.mark.parametrize("V,N,K", SHAPES)
def test_op_matches_stable_sort(rng, V, N, K, two_sample):
    if two_sample and N > 100 and dispatch.REGISTRY.backends["triton"].emulated():
        # the second sort is the same code at every width; the quantile cases cover the wide sorts
        pytest.skip("the interpreter runs the two-sample sort up to N = 37 (about a minute at 129 and 300)")
    proj = torch.randn(V, N, K, generator=rng).to(DEVICE)
    target = (torch.randn(V, N, K, generator=rng) if two_sample else normal_quantiles(N)).to(DEVICE)
    sum_sq, grad = sort_match_triton(proj, target)
    ref_sum_sq, ref_grad = _stable_match(proj, target)
    assert sum_sq.shape == (V, K) and grad.shape == (V, N, K)
    assert rel_err(sum_sq.cpu(), ref_sum_sq) <= FP32_TOL
    assert rel_err(grad.cpu(), ref_grad) <= FP32_TOL


@pytest.mark.parametrize("two_sample", [False, True], ids=["quantiles", "two-sample"])
def test_ties_zeros_and_infinities_follow_a_stable_sort(rng, two_sample):
    proj = hard_values(rng, 2, 40, 3)
    proj[:, 0] = 1.0  # every slice partly finite
    target = torch.randn(2, 40, 3, generator=rng) if two_sample else normal_quantiles(40)
    sum_sq, grad = sort_match_triton(proj.to(DEVICE), target.to(DEVICE))
    sum_sq, grad = sum_sq.cpu(), grad.cpu()
    ref_sum_sq, ref_grad = _stable_match(proj, target)
    assert torch.equal(torch.isinf(sum_sq), torch.isinf(ref_sum_sq))
    finite = torch.isfinite(ref_sum_sq)
    assert torch.allclose(sum_sq.double()[finite], ref_sum_sq[finite], rtol=1e-6)
    # equal values keep row order, as in a stable sort: the gradient lands on the same rows
    assert torch.equal(torch.isinf(grad), torch.isinf(ref_grad))
    finite = torch.isfinite(ref_grad)
    assert torch.allclose(grad.double()[finite], ref_grad[finite], rtol=1e-6, atol=1e-12)


def test_nan_sorts_last_and_propagates(rng):
    proj = torch.randn(1, 9, 2, generator=rng)
    proj[0, 3, 0] = float("nan")
    sum_sq, grad = sort_match_triton(proj.to(DEVICE), normal_quantiles(9).to(DEVICE))
    assert torch.isnan(sum_sq[0, 0]) and torch.isfinite(sum_sq[0, 1])
    # NaN took the last rank, so its row's gradient is NaN and every other row's is finite
    assert torch.isnan(grad[0, 3, 0]) and torch.isfinite(grad[0, :, 0]).sum() == 8


def test_matches_the_extension_op(rng):
    """Both sort-and-match ops compute the same thing in their own layouts."""
    proj = torch.randn(2, 50, 3, generator=rng)
    target = normal_quantiles(50)
    sum_sq, grad = sort_match_triton(proj.to(DEVICE), target.to(DEVICE))
    rows = proj.transpose(1, 2).reshape(-1, 50)
    ext_sum_sq, ext_grad = torch.ops.fused_sigreg.sort_match(rows, target)
    assert torch.allclose(sum_sq.cpu().flatten(), ext_sum_sq, rtol=1e-6)
    assert torch.equal(grad.cpu().transpose(1, 2).reshape(-1, 50), ext_grad)


OPS = SORT_OPS


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", ["sliced_wasserstein", "visreg", "rdmreg"])
def test_16bit_inputs(op, dtype):
    """16-bit input is projected in float32 as eager does, so the kernel's result is eager's at the same
    precision, up to the order of exact ties (more frequent with 16-bit inputs; compared with a stable
    sort); and ``check``'s 16-bit budget against float64 holds."""
    problem = make_problem(op, Shape(2, 37, 20, 4), dtype, DEVICE, seed=int(torch.randint(0, 2**31, (1,))))
    rows = {r["backend"]: r for r in check_problem(problem)}
    assert rows["triton"]["ok"], rows["triton"]
    got, ref = (problem.x.detach().clone().requires_grad_() for _ in range(2))
    value = problem.loss(got, "triton")
    ref_value = stable_sort_formula(op, ref, problem.fixed["directions"], problem.fixed.get("target"))
    value.backward(), ref_value.backward()
    assert got.grad.dtype == dtype
    # one 16-bit rounding step of slack: the float32 gradients may differ in their last bits
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(got.grad, ref.grad) <= 2.0**-8


def test_op_rejects_bad_arguments():
    proj = torch.randn(1, 8, 2, device=DEVICE)
    with pytest.raises(ValueError, match=r"\(V, N, K\) float32"):
        sort_match_triton(proj.double(), normal_quantiles(8).to(DEVICE))
    with pytest.raises(ValueError, match=r"target must be \(N,\) = \(8,\)"):
        sort_match_triton(proj, normal_quantiles(9).to(DEVICE))
    with pytest.raises(ValueError, match=f"at most {MAX_SORT_N}"):
        sort_config(MAX_SORT_N + 1)


@pytest.mark.parametrize("op", ["sliced_wasserstein", "visreg", "rdmreg"])
def test_saved_bytes_at_most_inputs_plus_one_gradient(op):
    """Saved: inputs (or VISReg's centred copy) + the (N, K) float32 gradient, + VISReg's per-dim stats."""
    shape = Shape(1, 64, 16, 8)
    problem = make_problem(op, shape, device=DEVICE)
    saved = bench.saved_tensor_bytes(problem, "triton")
    inputs = sum(t.numel() * t.element_size() for t in problem.inputs())
    per_dim_stats = 4 * 4 * shape.V * shape.D if op == "visreg" else 0
    assert saved["saved_bytes"] <= inputs + shape.N * shape.K * 4 + per_dim_stats


def test_sort_configs_cover_every_n_up_to_the_limit():
    assert MAX_SORT_N == SORT_CONFIGS[-1].block_n  # the routing limit is the widest compiled sort
    widths = [c.block_n for c in SORT_CONFIGS]
    assert widths == sorted(widths) and all(w & (w - 1) == 0 for w in widths)
    for n in (2, 3, 31, 32, 33, 129, 1000, 4095, 4096):
        cfg = sort_config(n)
        assert cfg.block_n >= n and (cfg.block_n == widths[0] or cfg.block_n < 2 * n)


def test_forced_triton_refuses_wider_sorts(rng):
    x = torch.randn(MAX_SORT_N + 1, 3, generator=rng).to(DEVICE)
    a = torch.nn.functional.normalize(torch.randn(3, 2, generator=rng), dim=0).to(DEVICE)
    with pytest.raises(fs.BackendUnavailableError, match=f"N <= {MAX_SORT_N} rows per slice, got N = {MAX_SORT_N + 1}"):
        fs.sliced_wasserstein(x, directions=a, backend="triton")


def test_auto_routes_by_device_and_n(monkeypatch):
    """On CUDA: the extension's CUDA sort at every N where it is built (measured faster at N = 2048);
    without it triton up to the widest compiled sort and eager beyond; on CPU the extension's CPU sort.
    Checked on fake CUDA tensors (no GPU needed) with a CUDA device pretended."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # before pretending a device: some torch versions then try to initialise CUDA
        a = torch.empty(8, 4, device="cuda")
        fits, wider = torch.empty(MAX_SORT_N, 8, device="cuda"), torch.empty(MAX_SORT_N + 1, 8, device="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # a build without nvcc has no CUDA sort: then triton where it fits, eager beyond
    built = extension.has_kernel("sort_match", "CUDA")
    small, beyond = ("cuda", "cuda") if built else ("triton", "eager")
    for op in ("sliced_wasserstein", "visreg"):
        assert dispatch.select(op, (fits, a))[0] == small
        assert dispatch.select(op, (wider, a))[0] == beyond
    assert dispatch.select("rdmreg", (fits, a, fits))[0] == small
    assert dispatch.select("rdmreg", (wider, a, wider))[0] == beyond
    assert dispatch.select("ecf_means", (fits, a))[0] == "triton"  # the CUDA sort's priority is per stage
    assert dispatch.select("sliced_wasserstein", (torch.empty(100, 8), torch.empty(8, 4)))[0] == "cpu"
