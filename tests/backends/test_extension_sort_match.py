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
from fused_sigreg.slicing import normal_quantiles
from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import GPU, SORT_OPS, hard_values, rel_err

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
    assert extension.has_kernel("sort_match", "CPU")
    if GPU or _cuda_part_expected():
        assert extension.has_kernel("sort_match", "CUDA")


@pytest.mark.parametrize("device", DEVICES)
def test_nan_sorts_last_and_propagates(rng, device):
    v = torch.randn(2, 9, generator=rng)
    v[0, 3] = float("nan")
    v = v.to(device)
    q = normal_quantiles(9)
    sum_sq, grad = (t.cpu() for t in ops.sort_match(v, q.to(device)))
    assert torch.isnan(sum_sq[0]) and torch.isfinite(sum_sq[1])
    # NaN sorts last: the other rows keep the first eight targets, in the order of their values
    rest = torch.cat([v[0, :3], v[0, 4:]]).cpu()
    order = torch.sort(rest, stable=True).indices
    want = torch.empty(8)
    want[order] = 2 * (rest[order] - q[:8])
    assert torch.isnan(grad[0, 3]) and torch.allclose(torch.cat([grad[0, :3], grad[0, 4:]]), want)


def _eager_match(proj, target):
    """mean (sort(proj) - target)^2 with autograd through a stable torch.sort."""
    p = proj.detach().double().requires_grad_()
    t = torch.sort(target.double(), dim=-1, stable=True).values if target.dim() == 2 else target.double()
    loss = (torch.sort(p, dim=-1, stable=True).values - t).square().mean()
    loss.backward()
    return loss.detach(), p.grad


# 64 and 65 straddle the CPU sort's switch from counting ranks to radix passes
SIZES = [(N, K) for N in (2, 3, 64, 65, 1000, 100_000) for K in (1, 7, 512)]


@pytest.mark.parametrize(
    "N,K,two_sample", [(N, K, two) for N, K in SIZES if N * K <= 1_000_000 for two in (False, True)]
)  # N = 100000 at K = 7: the widest slices; K = 512 at N = 1000
@pytest.mark.parametrize("device", DEVICES)
def test_sort_match_matches_eager(rng, N, K, two_sample, device):
    proj = torch.randn(K, N, generator=rng)
    target = torch.randn(K, N, generator=rng) if two_sample else normal_quantiles(N)
    sum_sq, grad = ops.sort_match(proj.to(device), target.to(device))
    ref_loss, ref_grad = _eager_match(proj, target)
    assert rel_err(sum_sq.sum() / proj.numel(), ref_loss) <= 1e-5
    assert rel_err(grad / proj.numel(), ref_grad) <= 1e-5


@pytest.mark.parametrize("n", [64, 200])  # the CPU sort's rank-counting and radix paths
@pytest.mark.parametrize("device", DEVICES)
def test_sort_match_with_ties_and_infinities(rng, device, n):
    proj = hard_values(rng, 5, n)
    proj[:, 0] = 1.0  # keep every row partly finite
    target = normal_quantiles(n)
    sum_sq, grad = (t.cpu() for t in ops.sort_match(proj.to(device), target.to(device)))
    ref_loss, ref_grad = _eager_match(proj, target)
    assert torch.allclose(sum_sq.sum().double() / proj.numel(), ref_loss, rtol=1e-6, equal_nan=True)
    # a stable order within ties gives the same gradient as a stable torch.sort, infinities included
    assert torch.equal(torch.isinf(grad), torch.isinf(ref_grad))
    finite = torch.isfinite(ref_grad)
    assert torch.allclose(grad.double()[finite] / proj.numel(), ref_grad[finite], rtol=1e-6, atol=1e-12)
    # and the eager reference (unstable sort) gets the same loss
    ties_only = torch.randint(0, 3, (4, 50), generator=rng).float()
    x_loss = ops.sort_match(ties_only.to(device), normal_quantiles(50).to(device))[0].sum() / ties_only.numel()
    assert rel_err(x_loss, (ties_only.sort(dim=1).values - normal_quantiles(50)).square().mean()) <= 1e-6


def test_opcheck_cpu_ops(rng):
    proj = torch.randn(6, 33, generator=rng)
    torch.library.opcheck(ops.sort_match, (proj, normal_quantiles(33)))
    torch.library.opcheck(ops.sort_match, (proj, torch.randn(6, 33, generator=rng)))


def test_bad_arguments_are_rejected():
    with pytest.raises(RuntimeError, match="float32"):
        ops.sort_match(torch.randn(3, 4, dtype=torch.float64), normal_quantiles(4))
    with pytest.raises(RuntimeError, match=r"target must be \(N,\) = \(4,\)"):
        ops.sort_match(torch.randn(3, 4), normal_quantiles(5))


OPS = SORT_OPS


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


def test_every_op_of_the_schema_file_is_checked_at_load():
    """library.OPS is what a load checks for (a library built from older sources lacks some: the backends
    are then off, with the rebuild named); it lists every op csrc/ops.cpp defines."""
    source = open(os.path.join(os.path.dirname(fs.__file__), "..", "csrc", "ops.cpp")).read()
    assert set(re.findall(r'm\.def\(\s*"(\w+)\(', source)) == set(extension.OPS)
    if extension.available()[0]:
        assert extension.missing_ops(ops) == []

    class Older:  # a namespace with the first two ops only
        sort_match = sort_stat = object()

    assert extension.missing_ops(Older, ("sort_match", "sort_match_loss", "sort_stat")) == ["sort_match_loss"]
