"""Input layouts every op takes: (*, N, D) with any leading dims, N = 1, and directions given as
(D, K) ``directions`` or (K, D) ``projections``; and the modules' own randomness (a step-seeded
generator, never torch's global RNG)."""

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg import dispatch
from fused_sigreg import reference as R
from fused_sigreg.slicing import normal_quantiles
from helpers import TRITON_DEVICE, rel_err

OPS = dispatch.OPS
BACKENDS = ("eager", "cpu", "triton")
FP32_TOL = 1e-5


def _device(backend):
    ok, why = fs.available_backends()[backend]
    if not ok:
        pytest.skip(f"backend {backend!r} is not usable here: {why}")
    return TRITON_DEVICE if backend == "triton" else "cpu"


def _run(op, x, a, backend, y=None, **kw):
    """value and dx of op on x with directions a (and targets y for rdmreg)."""
    x = x.detach().requires_grad_()
    extra = {"target_samples": y} if op == "rdmreg" else {}
    value = getattr(fs, op)(x, directions=a, backend=backend, **extra, **kw)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _formula(op, x, a, y=None):
    """The reference formula on x (*, N, D) as written: every leading dim is a view."""
    if op == "sigreg":
        return R.sliced_epps_pulley(x, a)
    if op == "rdmreg":
        return R.rdmreg(x, a, y)
    target = normal_quantiles(x.shape[-2])
    return R.visreg(x, a, target) if op == "visreg" else R.sliced_wasserstein(x, a, target)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 1, 3, 7, 6), (1, 6), (3, 1, 6), (2, 2, 1, 6)], ids=str)
def test_leading_dims_and_single_samples(rng, op, backend, shape):
    """(*, N, D) equals the reference on the same tensor; N = 1 computes what the reference computes
    (SIGReg: the ECF of one point; sort ops: one sample matched to the middle quantile / one target)."""
    device = _device(backend)
    x = torch.randn(*shape, generator=rng)
    if op == "rdmreg":  # non-negative like rectified features, without ReLU's exact ties
        x = x.abs()
    a = torch.nn.functional.normalize(torch.randn(shape[-1], 5, generator=rng), dim=0)
    y = torch.rand(*shape, generator=rng) if op == "rdmreg" else None
    want_v, want_g = _run(op, x, a, "eager", y)
    xr = x.detach().requires_grad_()
    (formula_g,) = torch.autograd.grad(_formula(op, xr, a, y), xr)
    assert rel_err(want_v, _formula(op, x, a, y)) <= FP32_TOL and rel_err(want_g, formula_g) <= FP32_TOL
    to = lambda t: None if t is None else t.to(device)
    got_v, got_g = _run(op, x.to(device), a.to(device), backend, to(y))
    assert got_v.shape == want_v.shape == ()
    assert rel_err(got_v, want_v) <= FP32_TOL, (got_v, want_v)
    assert rel_err(got_g, want_g) <= FP32_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigreg_per_slice_statistics_keep_leading_dims(rng, backend):
    device = _device(backend)
    x = torch.randn(2, 3, 9, 4, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(4, 5, generator=rng), dim=0)
    stats = fs.sigreg(x.to(device), directions=a.to(device), reduction=None, backend=backend)
    assert stats.shape == (2, 3, 5)
    want = R.sliced_epps_pulley(x, a, reduction=None)
    assert rel_err(stats, want) <= FP32_TOL


@pytest.mark.parametrize("op", OPS)
def test_projections_are_directions_transposed(rng, op):
    """projections= (M, D), the official layout, equals directions= (D, M); a square matrix is taken in
    the layout its keyword names, never guessed."""
    x = torch.rand(12, 6, generator=rng)
    p = torch.nn.functional.normalize(torch.randn(6, 6, generator=rng), dim=1)  # square: M = D
    y = {"target_samples": torch.rand(12, 6, generator=rng)} if op == "rdmreg" else {}
    by_rows = getattr(fs, op)(x, projections=p, **y)
    assert torch.equal(by_rows, getattr(fs, op)(x, directions=p.t(), **y))
    assert not torch.equal(by_rows, getattr(fs, op)(x, directions=p, **y))


@pytest.mark.parametrize(
    "make,call",
    [
        (lambda: fs.SIGReg(8), lambda m, x: m(x)),
        (lambda: fs.SlicedWasserstein(8), lambda m, x: m(x)),
        (lambda: fs.VISReg(8), lambda m, x: m(x)),
        (lambda: fs.RDMReg(8), lambda m, x: m(x.relu())),
    ],
    ids=["SIGReg", "SlicedWasserstein", "VISReg", "RDMReg"],
)
def test_modules_never_touch_the_global_rng(rng, make, call):
    """Each module call draws from a generator seeded with its global_step (then advances it): a
    user's augmentation stream is untouched, a rebuilt module repeats the run, and resuming from a
    state_dict continues it."""
    x = torch.randn(3, 10, 5, generator=rng)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    m = make()
    first = [call(m, x) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), before)
    assert int(m.global_step) == 3 and list(m.state_dict()) == ["global_step"]
    assert not torch.equal(first[0], first[1])
    again = make()
    assert all(torch.equal(a, call(again, x)) for a in first)
    resumed = make()
    resumed.load_state_dict({"global_step": torch.tensor(1)})
    assert torch.equal(call(resumed, x), first[1])


def test_sort_module_step_seeds_its_generator(rng):
    """Call i of a sort module equals the function with a generator seeded with i."""
    x = torch.randn(10, 5, generator=rng)
    m = fs.VISReg(8)
    m.global_step.fill_(7)
    assert torch.equal(m(x), fs.visreg(x, 8, generator=torch.Generator().manual_seed(7)))
    rd = fs.RDMReg(8, p=2.0)
    assert torch.equal(rd(x.relu()), fs.rdmreg(x.relu(), 8, p=2.0, generator=torch.Generator().manual_seed(0)))
