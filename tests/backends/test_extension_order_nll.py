"""lejepa's NLL on the compiled CPU extension (csrc/sort_nll_cpu.cpp, backends/order_nll.py) against the
eager reference fused_sigreg.univariate.nll: per-sample values in lejepa's order and input gradients,
masking (alpha < 0.5), ties, tails and the +-3 branch switch, NaN, the op's schema, usage modes and bad
input. (The conformance suite runs it at N = 1, 2, V = 3, near-collapse, 16-bit, golden cases, compile.)"""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from fused_sigreg import univariate
from fused_sigreg.compat import lejepa
from fused_sigreg.ops import univariate as fused
from fused_sigreg.tools import bench
from fused_sigreg.tools.check import StableSort
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import fp32_budget, rel_err, value_and_grad


def _reference(alpha):
    def run(x):
        with StableSort():  # the kernel's tie rule: tied values keep their row order
            return univariate.nll(x, alpha)

    return run


def _check_against_float64(x, rng, alpha=0.5):
    """fp32 fused vs the float64 reference on the same samples: NaN exactly where the reference has it,
    elsewhere 1e-5 or 4x the fp32 reference's own error (its j log Phi(x) terms cancel at middle ranks)."""
    weight = torch.randn(x.shape, generator=rng, dtype=torch.float64)
    value, grad = value_and_grad(lambda v: fused.nll(v, alpha, backend="cpu").nan_to_num(), x, weight.float())
    ref64, grad64 = value_and_grad(lambda v: _reference(alpha)(v).nan_to_num(), x.double(), weight)
    ref32, grad32 = value_and_grad(lambda v: _reference(alpha)(v).nan_to_num(), x, weight.float())
    raw, raw64 = fused.nll(x, alpha, backend="cpu"), _reference(alpha)(x.double())
    assert raw.dtype == torch.float32 and raw.shape == x.shape
    assert torch.equal(raw.isnan(), raw64.isnan())
    assert rel_err(value, ref64) <= fp32_budget(ref32, ref64)
    assert rel_err(grad, grad64) <= fp32_budget(grad32, grad64)


@pytest.mark.parametrize("alpha", [0.5, 0.1])
def test_matches_the_float64_reference(rng, alpha):
    """Three leading dims, and a sample whose tails reach past +-3 (lejepa's tail approximations)."""
    _check_against_float64(torch.randn(3, 1, 2, 9, 2, generator=rng) * 1.7 + 0.3, rng, alpha)
    _check_against_float64(torch.randn(2, 40, 3, generator=rng) * 4.0, rng, alpha)


def test_large_sample(rng):
    """N = 3000, where the sort is the radix sort and the middle ranks' terms are ~2000 times their sum."""
    _check_against_float64(torch.randn(3000, 3, generator=rng), rng)


def test_ties_near_collapse_and_the_branch_switch(rng):
    """Tied samples (ranks by row order, as a stable sort gives), a column collapsed to within 1e-6 of one
    value, and samples exactly at +-3 (the reference's clamp decides the slope there: CLAMP_CLOSED)."""
    ties = torch.randint(-6, 7, (40, 3), generator=rng).float() * 0.5
    ties[:2] = torch.tensor([3.0, -3.0]).unsqueeze(-1)
    collapsed = 0.25 + 1e-6 * torch.randn(40, 2, generator=rng)
    _check_against_float64(torch.cat([ties, collapsed], dim=1), rng)
    _check_against_float64(torch.cat([ties, collapsed], dim=1), rng, alpha=0.2)


def test_lejepas_order_is_not_the_input_order(rng):
    """Output i is the loss of rank o[i] (the reference gathers by the sort permutation, not its inverse):
    for unsorted input the outputs are not the samples' own losses, and the fused op agrees exactly in
    which loss goes where."""
    x = torch.tensor([[0.3], [-1.2], [2.0], [0.9], [-0.1]])
    got = fused.nll(x, backend="cpu")
    own = univariate.nll(x.sort(dim=0).values).gather(0, x.argsort(dim=0).argsort(dim=0))
    torch.testing.assert_close(got, univariate.nll(x), rtol=1e-6, atol=0)
    assert not torch.allclose(got, own)


def test_nan_sorts_last_as_in_the_reference(rng):
    x = torch.randn(12, 3, generator=rng)
    x[4, 1] = float("nan")
    got, want = fused.nll(x, backend="cpu"), univariate.nll(x)
    assert torch.equal(got.isnan(), want.isnan()) and got[:, 1].isnan().sum() == 1
    _check_against_float64(x, rng)


def test_rank_and_other_n_take_the_reference_or_name_the_argument(rng):
    x = torch.randn(10, 4, generator=rng)
    assert torch.equal(fused.nll(x, rank=3, n=20, backend="cpu"), univariate.nll(x, 0.5, 3, 20))
    with pytest.raises(ValueError, match="n must be the sample count N = 10"):
        fused.nll(x, n=12, backend="cpu")
    with pytest.raises(ValueError, match="rank must be at most n = 10"):
        fused.nll(x, rank=11)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        fused.nll(x, alpha=0.6)
    with pytest.raises(TypeError, match="rank must be an int"):
        fused.nll(x, rank=2.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fused.nll([1.0, 2.0])


def test_opcheck_and_the_op_rejects_what_it_cannot_compute(rng):
    proj = torch.randn(5, 23, generator=rng)
    constant = torch.randn(23, generator=rng)
    # intervals no sample falls in: opcheck compares outputs without equal_nan (masking: tests above)
    cutoffs = torch.stack([torch.full((23,), -20.0), torch.full((23,), -19.0)])
    for bounds in (None, cutoffs):
        for closed in (False, True):
            torch.library.opcheck(torch.ops.fused_sigreg.sort_nll, (proj, constant, bounds, closed))
    with pytest.raises(RuntimeError, match="constant must be float32 \\(N,\\)"):
        torch.ops.fused_sigreg.sort_nll(proj, constant[:5], None, True)
    with pytest.raises(RuntimeError, match="cutoffs must be float32 \\(2, N\\)"):
        torch.ops.fused_sigreg.sort_nll(proj, constant, cutoffs[:, :4], True)
    with pytest.raises(RuntimeError, match="proj must be float32"):
        torch.ops.fused_sigreg.sort_nll(proj.double(), constant, None, True)


def test_saves_a_slope_and_an_index_per_sample():
    """Backward keeps the slope (float32) and the input row's output (int64) of every sample; eager keeps
    the sorted values, their indices and every elementwise intermediate of the loss."""
    shape = Shape(1, 512, 16, 32)
    problem = make_problem("nll", shape)
    assert bench.saved_tensor_bytes(problem, "cpu")["saved_extra_bytes"] == (4 + 8) * shape.N * shape.K
    assert bench.saved_tensor_bytes(problem, "eager")["saved_extra_bytes"] > 2 * (4 + 8) * shape.N * shape.K


def test_usage_modes(rng):
    """torch.func and forward-mode AD run the reference under auto; double backward raises naming
    backend='eager'; retain_graph reuses what forward saved."""
    x = torch.randn(24, 4, generator=rng)
    weight = torch.randn(24, 4, generator=rng)
    got = torch.func.grad(lambda v: (fused.nll(v) * weight).sum())(x)  # the reference's own numbers
    assert torch.equal(got, value_and_grad(lambda v: fused.nll(v, backend="eager"), x, weight)[1])
    with torch.autograd.forward_ad.dual_level():
        tangent = torch.randn(x.shape, generator=rng)
        out = torch.autograd.forward_ad.unpack_dual(fused.nll(torch.autograd.forward_ad.make_dual(x, tangent))).tangent
    _, jvp = torch.func.jvp(lambda v: univariate.nll(v), (x,), (tangent,))
    torch.testing.assert_close(out, jvp, rtol=1e-5, atol=1e-6)
    v = x.clone().requires_grad_()
    loss = (fused.nll(v, backend="cpu") * weight).sum()
    (first,) = torch.autograd.grad(loss, v, retain_graph=True)
    (second,) = torch.autograd.grad(loss, v)
    assert torch.equal(first, second)
    with pytest.raises(RuntimeError, match="backend='eager'"):
        torch.autograd.grad(fused.nll(v, backend="cpu").sum(), v, create_graph=True)


def test_slicing_univariate_test_fuses_nll(rng):
    """Inside SlicingUnivariateTest the NLL takes the wrapper's backend: the extension's op is called, and
    the per-sample values (reduction=None: their mean can cancel to ~1e-4 of them, which would judge
    rounding) and the gradient are eager's."""
    x = torch.randn(2, 30, 8, generator=rng)
    f = lambda v, b: lejepa.SlicingUnivariateTest(lejepa.NLL(), 16, None, backend=b)(v)  # noqa: E731
    value, grad = value_and_grad(lambda v: f(v, "cpu"), x)
    ref, ref_grad = value_and_grad(lambda v: f(v, "eager"), x)
    assert rel_err(value, ref) <= 1e-5 and rel_err(grad, ref_grad) <= 1e-5
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        lejepa.SlicingUnivariateTest(lejepa.NLL(), 16, backend="cpu")(x)
    calls = [e.name for e in prof.events() if e.name == "fused_sigreg::sort_nll"]
    assert calls, "SlicingUnivariateTest(NLL) did not call the fused op"
