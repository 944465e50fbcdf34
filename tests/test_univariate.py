"""fused_sigreg.univariate (lejepa's univariate tests from their formulas) beyond the golden cases of
tests/test_ecosystem.py: views, NaN, tails, sorted input, exact zeros, and compat.lejepa's checks."""

import math

import pytest
import torch

from fused_sigreg import univariate as U
from fused_sigreg.compat import lejepa

STATISTICS = {
    "anderson_darling": U.anderson_darling,
    "cramer_von_mises": U.cramer_von_mises,
    "watson": U.watson,
    "shapiro_wilk": U.shapiro_wilk,
    "shapiro_wilk_rahman": lambda x: U.shapiro_wilk(x, "blom", "rahman"),
    "entropy": U.entropy,
    "entropy_right": lambda x: U.entropy(x, 2, method="right"),
    "moments": U.moments,
    "vcreg": U.vcreg,
    "extended_jarque_bera": U.extended_jarque_bera,
    "nll": U.nll,
}


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_each_view_is_its_own_sample_set(name, rng):
    fn = STATISTICS[name]
    x = torch.randn(3, 2, 17, 5, generator=rng)
    whole = fn(x)
    for i in range(3):
        for j in range(2):
            # atol: Anderson-Darling is -n + a sum (a cancellation), summed in another order per view
            assert torch.allclose(whole[i, j], fn(x[i, j]), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_nan_propagates_to_its_column(name, rng):
    x = torch.randn(16, 4, generator=rng)
    x[5, 2] = float("nan")
    out = STATISTICS[name](x)
    column = out[..., 2] if out.dim() == 1 else out[:, 2]
    assert column.isnan().any()
    others = out[..., [0, 1, 3]] if out.dim() == 1 else out[:, [0, 1, 3]]
    assert torch.isfinite(others).all()


@pytest.mark.parametrize("name", ["anderson_darling", "nll"])
def test_tails_have_finite_values_and_gradients(name):
    """log Phi in the tails is the approximation, each branch evaluated only where it is finite."""
    x = torch.tensor([[-40.0], [-3.5], [-3.0], [0.0], [3.0], [3.5], [40.0]], requires_grad=True)
    out = STATISTICS[name](x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


def test_log_norm_cdf_is_lejepas_approximation_of_log_phi():
    """Exact log Phi on [-3, 3]; lejepa's tail approximation outside, within 2% of it (lejepa's value,
    jump at -3 included, is what the golden cases hold)."""
    middle = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.allclose(U.log_norm_cdf(middle), torch.special.log_ndtr(middle), rtol=1e-12)
    left = torch.linspace(-40, -3.0001, 500, dtype=torch.float64)
    exact = torch.special.log_ndtr(left)
    assert ((U.log_norm_cdf(left) - exact).abs() / exact.abs()).max() < 2e-2
    right = torch.linspace(3.0001, 40, 500, dtype=torch.float64)
    assert (U.log_norm_cdf(right) - torch.special.log_ndtr(right)).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["anderson_darling", "cramer_von_mises", "watson", "shapiro_wilk", "entropy"])
def test_sorted_input_skips_the_sort(name, rng):
    fn = getattr(U, name)
    x = torch.randn(20, 3, generator=rng)
    assert torch.allclose(fn(x.sort(dim=0).values, sorted_input=True), fn(x), rtol=1e-6)


def test_exact_zeros():
    n = 40
    levels = (torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n
    quantiles = (math.sqrt(2.0) * torch.erfinv(2.0 * levels - 1.0)).unsqueeze(-1)
    # the sample at the EDF midpoints: Cramer-von Mises is exactly 0
    assert U.cramer_von_mises(quantiles).abs().max() < 1e-14
    # a sample proportional to the weights: Shapiro-Wilk 0
    weights = U.shapiro_wilk_weights(n).double().unsqueeze(-1)
    assert U.shapiro_wilk(3.0 * weights).abs().max() < 1e-6


def test_16_bit_input_is_computed_in_float32(rng):
    x = torch.randn(24, 4, generator=rng).to(torch.bfloat16)
    for name, fn in STATISTICS.items():
        out = fn(x)
        assert out.dtype == torch.float32, name
        assert torch.allclose(out, fn(x.float()), rtol=1e-6, atol=1e-7), name


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: lejepa.ShapiroWilk(expectation_mode="median"), ValueError, "expectation_mode"),
        (lambda: lejepa.ShapiroWilk(covariance_mode="full"), ValueError, "covariance_mode"),
        (lambda: lejepa.Entropy(method="left"), ValueError, "method"),
        (lambda: lejepa.Entropy(m=0), ValueError, "m must be"),
        (lambda: lejepa.Moments(k_max=0), ValueError, "k_max"),
        (lambda: lejepa.NLL(alpha=0.7), ValueError, "alpha"),
        (lambda: lejepa.NLL(k=5, N=3), ValueError, "k must be at most N"),
        (lambda: lejepa.NLL(k=2.0), TypeError, "k must be an int"),
        (lambda: lejepa.CramerVonMises(sorted="yes"), TypeError, "sorted"),
        (lambda: lejepa.VCReg(eps=0.0), ValueError, "eps"),
        (lambda: lejepa.Entropy(m=2)(torch.randn(4, 3)), ValueError, "more than 4 samples"),
        (lambda: lejepa.NLL(k=9)(torch.randn(4, 3)), ValueError, "k must be at most the sample count"),
        (lambda: lejepa.Watson()(torch.randn(4)), ValueError, "x"),
    ],
)
def test_bad_arguments_name_the_argument(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_moments_buffers_are_lejepas():
    m = lejepa.Moments(k_max=6)
    assert m.moments.flatten().tolist() == [1.0, 3.0, 15.0]
    assert torch.allclose(m.weights, torch.exp(-torch.arange(2.0, 7.0)))
    assert list(m.state_dict()) == ["moments", "weights"]
