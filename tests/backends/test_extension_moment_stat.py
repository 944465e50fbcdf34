"""lejepa's moment-family statistics on the compiled CPU extension (csrc/moment_stat*.{h,cpp}) against the
float64 eager references of fused_sigreg.univariate: every k_max class, many column blocks, a mean far
from the spread (centring), the op's schema and bad input, saved memory, DDP routing. The conformance
suite runs the rest (N = 1, 2, V = 3, 16-bit, NaN, opcheck, torch.compile, golden cases)."""

import pytest
import torch

from fused_sigreg import univariate
from fused_sigreg.compat import lejepa
from fused_sigreg.ops import univariate as fused
from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import rel_err
from moment_cases import CASES, IDS, check_against_float64


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_matches_the_float64_reference(rng, name, opts):
    """Three leading dims; 37 columns: two full blocks of 16 and a partial one."""
    x = torch.randn(3, 1, 2, 29, 37, generator=rng) * 1.3 + 0.4
    check_against_float64(name, opts, x, rng, "cpu")


@pytest.mark.parametrize("name", ["vcreg", "extended_jarque_bera"])
def test_a_mean_far_from_the_spread_keeps_fp32_precision(rng, name):
    """Mean 300, sd 1e-2: raw power sums would cancel every digit; the op centres each column first."""
    x = 300.0 + 1e-2 * torch.randn(200, 5, generator=rng)
    check_against_float64(name, {}, x, rng, "cpu")


def test_auto_is_the_extension_on_cpu(rng):
    x = torch.randn(2, 30, 5, generator=rng)
    for name, opts in CASES:
        got = getattr(fused, name)(x, **opts)
        assert torch.equal(got, getattr(fused, name)(x, **opts, backend="cpu"))


def test_opcheck(rng):
    proj = torch.randn(2, 23, 19, generator=rng)
    for statistic, closed in [(0, True), (1, True), (2, True), (2, False)]:
        torch.library.opcheck(torch.ops.fused_sigreg.moment_stat, (proj, statistic, 5, closed))
    _, coef, centre = torch.ops.fused_sigreg.moment_stat(proj, 0, 5, True)
    grad_out = torch.randn(2, 19, generator=rng)
    torch.library.opcheck(torch.ops.fused_sigreg.moment_stat_backward, (proj, coef, centre, grad_out))


def test_the_op_rejects_what_it_cannot_compute(rng):
    proj = torch.randn(2, 5, 3, generator=rng)
    with pytest.raises(RuntimeError, match="statistic must be an id"):
        torch.ops.fused_sigreg.moment_stat(proj, 3, 4, True)
    with pytest.raises(RuntimeError, match=r"k_max must be in \[1, 16\]"):
        torch.ops.fused_sigreg.moment_stat(proj, 0, 17, True)
    with pytest.raises(RuntimeError, match="float32 CPU tensor"):
        torch.ops.fused_sigreg.moment_stat(proj.double(), 1, 4, True)
    with pytest.raises(RuntimeError, match="float32 CPU tensor"):
        torch.ops.fused_sigreg.moment_stat(proj[0], 1, 4, True)
    _, coef, centre = torch.ops.fused_sigreg.moment_stat(proj, 1, 4, True)
    with pytest.raises(RuntimeError, match="coef must be float64"):
        torch.ops.fused_sigreg.moment_stat_backward(proj, coef.float(), centre, centre)
    with pytest.raises(RuntimeError, match="centre and grad_out must be float32"):
        torch.ops.fused_sigreg.moment_stat_backward(proj, coef, centre, centre[:1])


def test_k_max_beyond_the_op_runs_the_reference(rng):
    x = torch.randn(40, 3, generator=rng)
    torch.testing.assert_close(fused.moments(x, 18, backend="cpu"), univariate.moments(x, 18), rtol=0, atol=0)


def test_saves_the_samples_and_the_gradient_polynomial():
    """Backward keeps the float32 samples (N K floats; eager keeps them too) and per column the gradient
    polynomial's float64 coefficients and its centre."""
    shape = Shape(1, 512, 16, 32)
    for name, degree in (("moments", 4), ("extended_jarque_bera", 4)):
        problem = make_problem(name, shape)
        saved = bench.saved_tensor_bytes(problem, "cpu")["saved_extra_bytes"]
        assert saved == 4 * shape.N * shape.K + 8 * degree * shape.K + 4 * shape.K
        assert saved <= bench.saved_tensor_bytes(problem, "eager")["saved_extra_bytes"] + 12 * degree * shape.K


def test_bad_input_names_the_argument(rng):
    x = torch.randn(10, 3, generator=rng)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fused.vcreg([1.0, 2.0])
    with pytest.raises(ValueError, match=r"x must be samples \(..., N, K\)"):
        fused.extended_jarque_bera(torch.randn(5))
    with pytest.raises(ValueError, match="k_max must be"):
        fused.moments(x, k_max=0)
    with pytest.raises(TypeError, match="k_max must be"):
        fused.moments(x, k_max=2.5)


def test_slicing_univariate_test_runs_the_fused_moment_tests(rng):
    x = torch.randn(2, 30, 8, generator=rng)
    for test in (lejepa.Moments(k_max=6), lejepa.VCReg(), lejepa.ExtendedJarqueBera()):
        fused_value = lejepa.SlicingUnivariateTest(test, 16, backend="cpu")(x)
        eager_value = lejepa.SlicingUnivariateTest(test, 16, backend="eager")(x)
        assert rel_err(fused_value, eager_value) <= 1e-5
