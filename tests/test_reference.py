"""Mathematical properties of the eager reference: float64 gradcheck, closed forms, presets."""

import math

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg import reference as R
from fused_sigreg.slicing import epps_pulley_quadrature, normal_quantiles, random_directions
from helpers import rel_err


def _x(rng, *shape):
    return torch.randn(*shape, generator=rng, dtype=torch.float64)


def _dirs(rng, d, k):
    return random_directions(d, k, rng).double()


@pytest.mark.parametrize("shape", [(2, 3), (7, 5), (3, 6, 4)])
@pytest.mark.parametrize("preset", ["lejepa", "paper"])
@pytest.mark.parametrize("reduction", ["mean", "sum", None])
def test_sigreg_gradcheck(rng, shape, preset, reduction):
    t_max, n_points = fs.QUADRATURE_PRESETS[preset]
    x = _x(rng, *shape).requires_grad_()
    a = _dirs(rng, shape[-1], 4)
    fn = lambda x: fs.sigreg(x, directions=a, t_max=t_max, n_points=n_points, reduction=reduction)
    assert torch.autograd.gradcheck(fn, (x,))


def test_sigreg_gradient_closed_form(rng):
    """dT_k/dp_nk = 2 sum_j w_j t_j [(phi_j - C_kj) sin(t_j p) + S_kj cos(t_j p)] (docs/design.md §3, W = 1)."""
    p = _x(rng, 2, 37, 5).requires_grad_()
    stats = R.epps_pulley(p, 3.0, 17)
    stats.sum().backward()
    quad = epps_pulley_quadrature(3.0, 17)
    t, phi, w = (v.double() for v in quad)
    arg = p.detach().unsqueeze(-1) * t
    c, s = arg.cos().mean(-3, keepdim=True), arg.sin().mean(-3, keepdim=True)
    expected = 2 * ((w * t) * ((phi - c) * arg.sin() + s * arg.cos())).sum(-1)
    assert rel_err(p.grad, expected) <= 1e-12


def test_paper_algorithm_equals_preset(rng):
    """LeJEPA paper Algorithm 1 (complex ECF on linspace(-5, 5, 17), trapz) == t_max=5, 9 knots."""
    p = _x(rng, 50, 6)
    t = torch.linspace(-5, 5, 17, dtype=torch.float64)
    ecf = torch.exp(1j * p.unsqueeze(-1) * t).mean(0)
    err = (ecf - torch.exp(-t.square() / 2)).abs().square() * torch.exp(-t.square() / 2)
    expected = torch.trapezoid(err, t, dim=-1) * p.shape[0]
    got = R.epps_pulley(p, *fs.QUADRATURE_PRESETS["paper"])
    # The knots are exact in float32, but phi and the weights are float32 like lejepa's buffers.
    assert rel_err(got, expected) <= 1e-6


def test_sigreg_views_share_directions(rng):
    x = _x(rng, 3, 20, 6)
    a = _dirs(rng, 6, 5)
    stacked = fs.sigreg(x, directions=a, reduction=None)
    for v in range(3):
        assert torch.allclose(stacked[v], fs.sigreg(x[v], directions=a, reduction=None), rtol=1e-13)


def test_sigreg_clip_value(rng):
    x, a = _x(rng, 30, 4), _dirs(rng, 4, 8)
    stats = fs.sigreg(x, directions=a, reduction=None)
    thr = stats.median().item()
    clipped = fs.sigreg(x, directions=a, reduction=None, clip_value=thr)
    assert torch.equal(clipped, torch.where(stats < thr, torch.zeros_like(stats), stats))


@pytest.mark.parametrize("op", ["sliced_wasserstein", "sliced_wasserstein_clamped", "visreg", "rdmreg"])
@pytest.mark.parametrize("shape", [(2, 3), (9, 4), (3, 7, 5)])
def test_sort_ops_gradcheck(rng, op, shape):
    x = _x(rng, *shape)
    a = _dirs(rng, shape[-1], 3)
    if op == "rdmreg":
        y = torch.relu(_x(rng, *shape))
        x = x.abs() + 0.01  # positive and distinct: away from the ReLU kink and from ties
        fn = lambda z: fs.rdmreg(z, directions=a, target_samples=y)
    elif op == "visreg":
        # The shape term stops the gradient through sigma on purpose, so a finite-difference check
        # applies to the other two terms; the shape gradient has its own test below.
        fn = lambda z: fs.visreg(z, directions=a, scale_weight=0.7, shape_weight=0.0, center_weight=0.5)
    else:
        fn = lambda z: fs.sliced_wasserstein(
            z, directions=a, quantile_clamp=1e-4 if op == "sliced_wasserstein_clamped" else None
        )
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),))


def test_visreg_shape_gradient_is_centred_and_sigma_detached(rng):
    """Shape term alone: dL/dz = g / sigma minus its mean over N, sigma held constant (docs/design.md §3)."""
    z = _x(rng, 2, 11, 4).requires_grad_()
    a = _dirs(rng, 4, 6)
    fs.visreg(z, directions=a, scale_weight=0.0, center_weight=0.0).backward()
    zc = z.detach() - z.detach().mean(-2, keepdim=True)
    sigma = zc.norm(dim=-2, keepdim=True) / math.sqrt(11) + 1e-6
    u = (zc / sigma).requires_grad_()
    R.sliced_wasserstein(u, a, normal_quantiles(11).double()).backward()
    g = u.grad / sigma
    assert rel_err(z.grad, g - g.mean(-2, keepdim=True)) <= 1e-12


def test_normal_quantiles():
    q = normal_quantiles(9).double()
    levels = torch.arange(1, 10, dtype=torch.float64) / 10
    assert torch.allclose(q, torch.distributions.Normal(0.0, 1.0).icdf(levels), atol=1e-6)
    clamped = normal_quantiles(20001, clamp=1e-4)
    assert clamped.min().item() == pytest.approx(-3.719016, abs=1e-5)


def test_rgg_closed_forms():
    # p = 1, mu = 0: ReLU(Laplace(0, s)) has mean s/2 and variance 3 s^2 / 4.
    assert fs.rgn_unit_variance_sigma(1.0) == pytest.approx(2 / math.sqrt(3), rel=1e-12)
    # p = 2, mu = 0: ReLU(N(0, s^2)) has variance s^2 (1/2 - 1/(2 pi)).
    assert fs.rgn_unit_variance_sigma(2.0) == pytest.approx(1 / math.sqrt(0.5 - 0.5 / math.pi), rel=1e-12)
    assert fs.expected_l0_fraction(1.0, 0.0) == pytest.approx(0.5, rel=1e-12)
    assert fs.expected_l0_fraction(2.0, -1.0, 1.0) == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), rel=1e-10)


@pytest.mark.parametrize("p,mu", [(1.0, 0.0), (2.0, 0.5), (0.5, 0.25), (1.5, -1.0), (3.0, 0.0)])
def test_rgg_samples_match_moments(p, mu):
    gen = torch.Generator().manual_seed(1234)
    sigma = fs.gn_unit_variance_sigma(p)
    y = fs.sample_rgg((400_000,), p, mu, sigma, generator=gen).double()
    m = fs.rgg.rgn_moments(p, mu, sigma)
    assert (y >= 0).all()
    # 400k samples: standard errors are ~2e-3 of these moments; 1e-2 is 5 sigma.
    assert y.mean().item() == pytest.approx(m.mean, rel=1e-2, abs=2e-3)
    assert y.var().item() == pytest.approx(m.variance, rel=2e-2)
    assert (y > 0).double().mean().item() == pytest.approx(m.active_fraction, abs=5e-3)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 10.0, 50.0, 200.0])
def test_rgg_samples_follow_the_exact_distribution(rng, p):
    """Kolmogorov-Smirnov distance of the positive part of ReLU(GN_p(0, 1)) samples to the exact CDF
    P(Y <= y) = 1/2 + gammainc(1/p, y^p / p) / 2 for y > 0, at a critical value of about 1e-6."""
    y = fs.sample_rgg((200_000,), p, 0.0, 1.0, generator=rng).double()
    pos = y[y > 0].sort().values
    n_pos = pos.numel()
    assert abs(n_pos / y.numel() - 0.5) < 6 * 0.5 / math.sqrt(y.numel())
    alpha, log_x = 1.0 / p, p * pos.log() - math.log(p)  # x = y^p / p, which underflows for large p
    small_x = alpha * log_x - math.lgamma(1.0 + alpha)  # log gammainc(alpha, x) = this + O(x) as x -> 0
    gammainc = torch.where(log_x < -600, small_x.exp(), torch.special.gammainc(torch.tensor(alpha), log_x.exp()))
    exact = 0.5 + 0.5 * gammainc
    # empirical CDF of Y at the i-th positive sample: (#zeros + i) / n, from both sides of the step
    n = y.numel()
    upper = (n - n_pos + torch.arange(1, n_pos + 1, dtype=torch.float64)) / n
    ks = torch.maximum((upper - exact).abs(), (upper - 1.0 / n - exact).abs()).max().item()
    assert ks < 2.7 / math.sqrt(n), f"KS distance {ks:.4f} at p={p}"


def test_rgg_generator_reproducible():
    a = fs.sample_rgg((50, 3), 1.5, generator=torch.Generator().manual_seed(3))
    b = fs.sample_rgg((50, 3), 1.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
