"""lejepa's EDF-family statistics on the compiled CPU extension (csrc/sort_stat*.{h,cpp}) against the
eager references of fused_sigreg.univariate: values and input gradients, ties, near-collapse, NaN,
16-bit input, the op's schema (opcheck), torch.compile, usage modes and bad input."""

import pytest
import torch

from fused_sigreg import BackendUnavailableError, univariate
from fused_sigreg.compat import lejepa
from fused_sigreg.ops import univariate as fused
from fused_sigreg.tools import bench
from fused_sigreg.tools.check import StableSort
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import fp32_budget, rel_err, value_and_grad

# (name, options): every statistic and every mode of those that have modes
CASES = [
    ("anderson_darling", {}),
    ("cramer_von_mises", {}),
    ("watson", {}),
    ("shapiro_wilk", {}),
    ("shapiro_wilk", dict(expectation_mode="blom", covariance_mode="rahman")),
    ("shapiro_wilk", dict(expectation_mode="rahman", covariance_mode="shapiro_francia")),
    ("entropy", {}),
    ("entropy", dict(m=2, method="right")),
    ("entropy", dict(m=3, method="centered")),
]
IDS = [name + "".join(f"-{v}" for v in opts.values()) for name, opts in CASES]


def _fused(name, opts, backend="cpu"):
    return lambda x: getattr(fused, name)(x, **opts, backend=backend)


def _reference(name, opts):
    def run(x):
        with StableSort():  # the kernel's tie rule: tied values keep their row order
            return getattr(univariate, name)(x, **opts)

    return run


def _check_against_float64(name, opts, x, rng):
    """fp32 fused vs the float64 reference on the same samples; budget 1e-5, or 4x the fp32 reference's
    own error where the statistic's conditioning puts that higher (fp32_budget)."""
    weight = torch.randn(x.shape[:-2] + x.shape[-1:], generator=rng, dtype=torch.float64)
    value, grad = value_and_grad(_fused(name, opts), x, weight.float())
    ref64, grad64 = value_and_grad(_reference(name, opts), x.double(), weight)
    ref32, grad32 = value_and_grad(_reference(name, opts), x, weight.float())
    assert value.dtype == torch.float32 and value.shape == ref64.shape
    assert rel_err(value, ref64) <= fp32_budget(ref32, ref64)
    assert rel_err(grad, grad64) <= fp32_budget(grad32, grad64)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_every_mode_matches_the_float64_reference(rng, name, opts):
    """Samples with three leading dims (the conformance suite runs each statistic's default mode at
    N = 1, 2, V = 3, near-collapse, 16-bit, NaN, opcheck and torch.compile)."""
    x = torch.randn(3, 1, 2, 9, 2, generator=rng) * 1.7 + 0.3
    _check_against_float64(name, opts, x, rng)


@pytest.mark.parametrize("name,opts", CASES[:4] + CASES[6:8], ids=IDS[:4] + IDS[6:8])
def test_large_sample(rng, name, opts):
    """N = 3000: Anderson-Darling's -n + sum cancels ~4 digits, which the op's double sums keep."""
    _check_against_float64(name, opts, torch.randn(3000, 3, generator=rng), rng)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_ties_and_near_collapse(rng, name, opts):
    """Tied samples (the gradient goes to ranks by row order, as a stable sort gives; entropy's spacings
    of 0 are clamped to eps with no gradient) and a column collapsed to within 1e-6 of one value."""
    ties = torch.randint(-3, 4, (40, 3), generator=rng).float() * 0.5
    collapsed = 0.25 + 1e-6 * torch.randn(40, 2, generator=rng)
    _check_against_float64(name, opts, torch.cat([ties, collapsed], dim=1), rng)


@pytest.mark.parametrize(
    "name,opts", [("anderson_darling", {}), ("entropy", dict(eps=0.5)), ("entropy", dict(eps=0.5, method="right"))]
)
def test_clamp_bounds_follow_torch(rng, name, opts):
    """Samples exactly at Anderson-Darling's +-3 branch switch and spacings exactly eps: the references
    clamp there, and torch's clamp gradient at a bound changed between versions (univariate.CLAMP_CLOSED)."""
    x = torch.randint(-6, 7, (30, 4), generator=rng).float() * 0.5
    x[:2] = torch.tensor([3.0, -3.0]).unsqueeze(-1)
    _check_against_float64(name, opts, x, rng)


def test_entropy_below_its_spacing_runs_the_reference(rng):
    """Below 2m + 2 (centred) / m + 2 (right) samples the reference's end spacings overlap; the stage
    returns the reference itself there."""
    for n, m, method in [(3, 1, "centered"), (5, 2, "centered"), (2, 1, "right"), (3, 2, "right")]:
        x = torch.randn(n, 4, generator=rng)
        got = fused.entropy(x, m=m, method=method, backend="cpu")
        torch.testing.assert_close(got, univariate.entropy(x, m, 1e-5, method), rtol=0, atol=0, equal_nan=True)


def test_sorted_input_runs_the_reference(rng):
    x = torch.randn(25, 3, generator=rng).sort(dim=0).values
    for name, opts in CASES:
        got = getattr(fused, name)(x, **opts, sorted_input=True, backend="cpu")
        assert torch.equal(got, getattr(univariate, name)(x, **opts, sorted_input=True))


def test_auto_is_the_extension_on_cpu(rng):
    x = torch.randn(2, 30, 5, generator=rng)
    for name, opts in CASES:
        assert torch.equal(_fused(name, opts, None)(x), _fused(name, opts, "cpu")(x))


def test_opcheck(rng):
    proj = torch.randn(5, 23, generator=rng)
    weights = univariate.shapiro_wilk_weights(23)
    for statistic in range(6):
        for closed in (False, True):
            torch.library.opcheck(torch.ops.fused_sigreg.sort_stat, (proj, statistic, 1e-5, 2, weights, closed))


def test_the_op_rejects_what_it_cannot_compute(rng):
    proj = torch.randn(3, 5, generator=rng)
    with pytest.raises(RuntimeError, match="statistic must be an id"):
        torch.ops.fused_sigreg.sort_stat(proj, 9, 1e-5, 1, None, True)
    with pytest.raises(RuntimeError, match="needs N >= 6"):
        torch.ops.fused_sigreg.sort_stat(proj, 4, 1e-5, 2, None, True)
    with pytest.raises(RuntimeError, match="Shapiro-Wilk needs its weights"):
        torch.ops.fused_sigreg.sort_stat(proj, 3, 1e-5, 1, None, True)
    with pytest.raises(RuntimeError, match="weights must be float32"):
        torch.ops.fused_sigreg.sort_stat(proj, 3, 1e-5, 1, torch.ones(4), True)
    with pytest.raises(RuntimeError, match="proj must be float32"):
        torch.ops.fused_sigreg.sort_stat(proj.double(), 0, 1e-5, 1, None, True)


def test_saves_only_its_gradient():
    """Backward keeps one float32 gradient of the projections (N K floats); eager keeps the sorted values,
    their int64 indices and the statistic's intermediates."""
    shape = Shape(1, 512, 16, 32)
    for name in ("anderson_darling", "shapiro_wilk", "entropy"):
        problem = make_problem(name, shape)
        assert bench.saved_tensor_bytes(problem, "cpu")["saved_extra_bytes"] == 4 * shape.N * shape.K
        assert bench.saved_tensor_bytes(problem, "eager")["saved_extra_bytes"] > 2 * 4 * shape.N * shape.K


def test_usage_modes(rng):
    """torch.func and forward-mode AD run the reference under auto (the kernel has neither rule);
    double backward raises naming backend='eager'; retain_graph reuses the saved gradient."""
    x = torch.randn(24, 4, generator=rng)
    stat = _fused("watson", {}, None)
    got = torch.func.grad(lambda v: stat(v).sum())(x)
    torch.testing.assert_close(got, value_and_grad(stat, x)[1], rtol=1e-5, atol=1e-7)
    with torch.autograd.forward_ad.dual_level():
        tangent = torch.randn(x.shape, generator=rng)
        out = torch.autograd.forward_ad.unpack_dual(stat(torch.autograd.forward_ad.make_dual(x, tangent))).tangent
    torch.testing.assert_close(
        out, (value_and_grad(stat, x)[1] * tangent).sum(0, keepdim=True)[0], rtol=1e-4, atol=1e-6
    )
    v = x.clone().requires_grad_()
    loss = _fused("anderson_darling", {})(v).sum()
    (first,) = torch.autograd.grad(loss, v, retain_graph=True)
    (second,) = torch.autograd.grad(loss, v)
    assert torch.equal(first, second)
    v = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="backend='eager'"):
        torch.autograd.grad(_fused("entropy", {})(v).sum(), v, create_graph=True)


def test_bad_input_names_the_argument(rng):
    x = torch.randn(10, 3, generator=rng)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fused.watson([1.0, 2.0])
    with pytest.raises(TypeError, match="x must be a floating-point"):
        fused.cramer_von_mises(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must be samples \(..., N, K\)"):
        fused.anderson_darling(torch.randn(5))
    with pytest.raises(TypeError, match="sorted_input must be a bool"):
        fused.anderson_darling(x, sorted_input=1)
    with pytest.raises(ValueError, match="method must be one of"):
        fused.entropy(x, method="left")
    with pytest.raises(ValueError, match="m must be"):
        fused.entropy(x, m=0)
    with pytest.raises(ValueError, match="eps must be"):
        fused.shapiro_wilk(x, eps=0.0)
    with pytest.raises(ValueError, match="expectation_mode must be one of"):
        fused.shapiro_wilk(x, expectation_mode="exact")
    with pytest.raises(BackendUnavailableError, match="float32/bfloat16/float16"):
        fused.watson(x.double(), backend="cpu")


def test_slicing_univariate_test_passes_its_backend_to_the_fused_statistic(rng):
    x = torch.randn(2, 30, 8, generator=rng)
    for test in (lejepa.AndersonDarling(), lejepa.ShapiroWilk(), lejepa.Entropy(method="right")):
        fused_value = lejepa.SlicingUnivariateTest(test, 16, backend="cpu")(x)
        eager_value = lejepa.SlicingUnivariateTest(test, 16, backend="eager")(x)
        assert rel_err(fused_value, eager_value) <= 1e-5
        # the backend reaches the statistic's dispatch: float64 samples (lejepa draws its directions in
        # the default dtype) are not the extension's
        saved = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            with pytest.raises(BackendUnavailableError, match="float32/bfloat16/float16"):
                lejepa.SlicingUnivariateTest(test, 16, backend="cpu")(x.double())
        finally:
            torch.set_default_dtype(saved)
