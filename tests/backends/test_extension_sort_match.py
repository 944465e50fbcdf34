"""The compiled extension (csrc/): segmented sort and sort-and-match ops, and the cpu backend of
SWD, VISReg and RDMReg, against torch.sort and the eager reference."""

import os
import re
import shutil
import subprocess

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg.backends.extension import library as extension
from fused_sigreg.backends.sort_match import QuantileMatchLoss
from fused_sigreg.slicing import normal_quantiles
from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import GPU, SORT_OPS, hard_values, rel_err, sort_reference

ops = torch.ops.fused_sigreg
# The extension's kernels run on CPU tensors, and on CUDA tensors where there is a GPU (the CUDA
# part is then required: see the first test).
DEVICES = ["cpu"] + (["cuda"] if GPU else [])


def _cuda_part_expected() -> bool:
    """What setup.py decides: a CUDA torch, a toolkit of the same major version, not switched off."""
    if os.environ.get("FUSED_SIGREG_BUILD_CUDA") == "0" or not torch.version.cuda or not shutil.which("nvcc"):
        return False
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.", out)
    return bool(m) and m.group(1) == torch.version.cuda.split(".")[0]


def test_extension_is_built_with_cpu_and_cuda_kernels():
    assert extension.available() == (True, "")
    for op in ("sort_match", "segmented_sort"):
        assert extension.has_kernel(op, "CPU")
        if GPU or _cuda_part_expected():
            assert extension.has_kernel(op, "CUDA")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("S,N", [(1, 2), (3, 3), (7, 1000), (2, 5000)])
def test_segmented_sort_equals_stable_torch_sort(rng, S, N, device):
    v = hard_values(rng, S, N)
    sorted_, rows = (t.cpu() for t in ops.segmented_sort(v.to(device)))
    ref = torch.sort(v, dim=1, stable=True)
    assert rows.dtype == torch.int32
    assert torch.equal(sorted_, ref.values)  # -0 and +0 compare equal
    assert torch.equal(rows.long(), ref.indices)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_sorts_last_and_propagates(rng, device):
    v = torch.randn(2, 9, generator=rng)
    v[0, 3] = float("nan")
    v = v.to(device)
    sorted_, rows = ops.segmented_sort(v)
    assert torch.isnan(sorted_[0, -1]) and rows[0, -1] == 3
    sum_sq, grad = ops.sort_match(v, normal_quantiles(9).to(device))
    assert torch.isnan(sum_sq[0]) and torch.isfinite(sum_sq[1])


def _eager_match(proj, target):
    """mean (sort(proj) - target)^2 with autograd through a stable torch.sort."""
    p = proj.detach().double().requires_grad_()
    t = torch.sort(target.double(), dim=-1, stable=True).values if target.dim() == 2 else target.double()
    loss = (torch.sort(p, dim=-1, stable=True).values - t).square().mean()
    loss.backward()
    return loss.detach(), p.grad


SIZES = [(N, K) for N in (2, 3, 1000, 100_000) for K in (1, 7, 512)]


@pytest.mark.parametrize(
    "N,K,two_sample", [(N, K, False) for N, K in SIZES] + [(N, K, True) for N, K in SIZES if N * K < 10_000_000]
)  # one 5e7-element case is enough
@pytest.mark.parametrize("device", DEVICES)
def test_sort_match_matches_eager(rng, N, K, two_sample, device):
    proj = torch.randn(K, N, generator=rng)
    target = torch.randn(K, N, generator=rng) if two_sample else normal_quantiles(N)
    p = proj.to(device).requires_grad_()
    loss = QuantileMatchLoss.apply(p, target.to(device), ops.sort_match)
    loss.backward()
    ref_loss, ref_grad = _eager_match(proj, target)
    assert rel_err(loss, ref_loss) <= 1e-5
    assert rel_err(p.grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_sort_match_with_ties_and_infinities(rng, device):
    proj = hard_values(rng, 5, 64)
    proj[:, 0] = 1.0  # keep every row partly finite
    target = normal_quantiles(64)
    sum_sq, grad = (t.cpu() for t in ops.sort_match(proj.to(device), target.to(device)))
    ref_loss, ref_grad = _eager_match(proj, target)
    assert torch.allclose(sum_sq.sum().double() / proj.numel(), ref_loss, rtol=1e-6, equal_nan=True)
    # a stable order within ties gives the same gradient as a stable torch.sort, infinities included
    assert torch.equal(torch.isinf(grad), torch.isinf(ref_grad))
    finite = torch.isfinite(ref_grad)
    assert torch.allclose(grad.double()[finite] / proj.numel(), ref_grad[finite], rtol=1e-6, atol=1e-12)
    # and the eager reference (unstable sort) gets the same loss
    ties_only = torch.randint(0, 3, (4, 50), generator=rng).float()
    x_loss = QuantileMatchLoss.apply(ties_only, normal_quantiles(50), ops.sort_match)
    assert rel_err(x_loss, (ties_only.sort(dim=1).values - normal_quantiles(50)).square().mean()) <= 1e-6


def test_opcheck_cpu_ops(rng):
    proj = torch.randn(6, 33, generator=rng)
    torch.library.opcheck(ops.sort_match, (proj, normal_quantiles(33)))
    torch.library.opcheck(ops.sort_match, (proj, torch.randn(6, 33, generator=rng)))
    torch.library.opcheck(ops.segmented_sort, (proj,))


def test_bad_arguments_are_rejected():
    with pytest.raises(RuntimeError, match="float32"):
        ops.sort_match(torch.randn(3, 4, dtype=torch.float64), normal_quantiles(4))
    with pytest.raises(RuntimeError, match=r"target must be \(N,\) = \(4,\)"):
        ops.sort_match(torch.randn(3, 4), normal_quantiles(5))


OPS = SORT_OPS


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("shape,K", [((2, 5), 3), ((3, 37, 20), 33), ((300, 65), 129)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_backend_matches_eager(rng, op, shape, K, dtype, device):
    """The cpu backend on CPU tensors, the cuda backend (CUB) on CUDA tensors."""
    x = torch.randn(*shape, generator=rng).to(device, dtype)
    a = torch.nn.functional.normalize(torch.randn(shape[-1], K, generator=rng), dim=0).to(device)
    got_x = x.clone().requires_grad_()
    value = OPS[op](got_x, a, backend=device)
    value.backward()
    ref, ref_grad = sort_reference(op, x, a)
    # same projections as eager (bitwise), so the sort's ranks agree (exact ties: see sort_reference);
    # the fp32 gradients differ in summation order only, which a bf16 result may turn into one-ulp
    # differences (2^-8 relative)
    assert rel_err(value, ref) <= 1e-5
    assert rel_err(got_x.grad, ref_grad) <= (1e-5 if dtype == torch.float32 else 2.0**-7)


@pytest.mark.parametrize("device", DEVICES)
def test_rdmreg_backend_matches_eager(rng, device):
    z = torch.relu(torch.randn(2, 50, 12, generator=rng)).to(device)
    a = torch.nn.functional.normalize(torch.randn(12, 40, generator=rng), dim=0).to(device)
    y = fs.sample_rgg(z.shape, generator=rng).to(device)
    got = z.clone().requires_grad_()
    v = fs.rdmreg(got, directions=a, target_samples=y, backend=device)
    v.backward()
    r, ref_grad = sort_reference("rdmreg", z, a, y)
    assert rel_err(v, r) <= 1e-5 and rel_err(got.grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("key", ["visreg", "sliced_wasserstein"])
@pytest.mark.parametrize("i", range(4))
def test_golden_visreg_repository_through_cpu(golden, key, i):
    case = golden["visreg_repo"][i]
    ref = case[key]
    z = case["z"].clone().requires_grad_()
    value = OPS[key if key == "visreg" else "sliced_wasserstein_clamped"](z, ref["directions"], backend="cpu")
    value.backward()
    assert rel_err(value, ref["value"]) <= 1e-5 and rel_err(z.grad, ref["grad"]) <= 1e-5


@pytest.mark.parametrize("i", range(3))
def test_golden_rdmreg_through_cpu(golden, i):
    case = golden["rdmreg"][i]
    z = case["z"].clone().requires_grad_()
    value = fs.rdmreg(z, directions=case["projections"].t(), target_samples=case["target_samples"], backend="cpu")
    value.backward()
    assert rel_err(value, case["value"]) <= 1e-5 and rel_err(z.grad, case["grad"]) <= 1e-5


def test_auto_uses_cpu_backend_and_refuses_what_it_cannot_do(rng):
    x = torch.randn(40, 6, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(6, 9, generator=rng), dim=0)
    assert torch.equal(fs.sliced_wasserstein(x, directions=a), fs.sliced_wasserstein(x, directions=a, backend="cpu"))
    assert fs.sliced_wasserstein(x.double(), directions=a.double()).dtype == torch.float64  # eager
    with pytest.raises(fs.BackendUnavailableError, match="float32/bfloat16/float16"):
        fs.visreg(x.double(), directions=a.double(), backend="cpu")
    with pytest.raises(fs.BackendUnavailableError, match="require grad"):
        fs.visreg(x, directions=a.clone().requires_grad_(), backend="cpu")
    with pytest.raises(
        fs.BackendUnavailableError, match="runs on cuda tensors|no CUDA device|built without its CUDA sources"
    ):
        fs.visreg(x, directions=a, backend="cuda")


@pytest.mark.parametrize("op", ["sliced_wasserstein", "visreg", "rdmreg"])
def test_saved_bytes_at_most_inputs_plus_one_gradient(op):
    """Saved: inputs (or VISReg's centred copy in place of z) + the (N, K) float32 gradient, plus
    VISReg's four per-dimension statistics."""
    shape = Shape(1, 512, 32, 64)
    problem = make_problem(op, shape)
    saved = bench.saved_tensor_bytes(problem, "cpu")
    inputs = sum(t.numel() * t.element_size() for t in problem.inputs())
    per_dim_stats = 4 * 4 * shape.V * shape.D if op == "visreg" else 0
    assert saved["saved_bytes"] <= inputs + shape.N * shape.K * 4 + per_dim_stats
    eager = bench.saved_tensor_bytes(problem, "eager")
    assert eager["saved_extra_bytes"] >= 3 * shape.N * shape.K * 4  # sorted values + int64 indices


def test_torch_compile_through_the_extension(rng):
    x = torch.randn(2, 30, 8, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(8, 5, generator=rng), dim=0)
    fn = lambda v: fs.visreg(v, directions=a, backend="cpu")
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = x.clone().requires_grad_()
    ref = x.clone().requires_grad_()
    compiled(got).backward()
    fn(ref).backward()
    assert torch.allclose(got.grad, ref.grad, rtol=1e-6, atol=1e-9)


def test_import_without_the_extension_falls_back_to_eager():
    """A build without the extension still imports (one warning) and runs every op on eager."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fused_sigreg._C'] = None\n"  # makes `from . import _C` raise ImportError
        "import warnings; warnings.simplefilter('always')\n"
        "import torch, fused_sigreg as fs\n"
        "print(fs.available_backends()['cpu'][0])\n"
        "x = torch.randn(20, 4); a = torch.nn.functional.normalize(torch.randn(4, 6), dim=0)\n"
        "print(float(fs.visreg(x, directions=a)) > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
    assert out.stderr.count("the compiled extension is not available") == 1
