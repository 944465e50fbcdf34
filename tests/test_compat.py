"""fused_sigreg.compat: the official names and signatures give the official numbers (golden data
through the adapters), draw the official random numbers, and keep the official module state."""

import math

import pytest
import torch
import torch.nn.functional as F

import fused_sigreg as fs
from fused_sigreg import reference as R
from fused_sigreg.compat import lejepa, rectified_lpjepa, visreg
from helpers import GPU, TRITON_DEVICE, rel_err

TOL = 1e-5
# The adapters only forward backend=; the interpreter's golden runs are in tests/backends already.
BACKENDS = [None, "eager", "cpu"] + (["triton"] if GPU else [])
LEJEPA_KEYS = ["global_step", "univariate_test.t", "univariate_test.phi", "univariate_test.weights"]


def _value_and_grad(fn, x):
    x = x.clone().requires_grad_()
    value = fn(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _backend_device(backend):
    if backend is None:
        return "cpu"
    ok, why = fs.available_backends()[backend]
    if not ok:
        pytest.skip(f"backend {backend!r} is not usable here: {why}")
    return TRITON_DEVICE if backend == "triton" else "cpu"


# ------------------------------------------------------------------------------------------- lejepa


@pytest.mark.parametrize("backend", [None, "eager", "cpu"])  # lejepa's golden directions are CPU draws
@pytest.mark.parametrize("i", range(7))
def test_lejepa_golden_through_the_adapter(golden, i, backend):
    case = golden["sigreg_lejepa"][i]
    test = lejepa.SlicingUnivariateTest(
        lejepa.EppsPulley(case["t_max"], case["n_points"]), case["K"], reduction=case["reduction"], backend=backend
    )
    test.global_step.fill_(case["step"])
    value, grad = _value_and_grad(test, case["x"])
    assert value.shape == case["value"].shape
    assert rel_err(value, case["value"]) <= TOL and rel_err(grad, case["grad"]) <= TOL
    assert int(test.global_step) == case["step"] + 1


def _lejepa_state(step, t_max=3.0, n_points=17):
    """A state_dict as lejepa's SlicingUnivariateTest(EppsPulley(t_max, n_points), K) writes it: the
    step, then the knots, N(0,1) CF and folded trapezoid weights, float32 (built from its formula)."""
    t = torch.linspace(0, t_max, n_points, dtype=torch.float32)
    dt = t_max / (n_points - 1)
    w = torch.full((n_points,), 2 * dt, dtype=torch.float32)
    w[0] = w[-1] = dt
    phi = torch.exp(-(t**2) / 2)
    buffers = {"t": t, "phi": phi, "weights": w * phi}
    return {"global_step": torch.tensor(step), **{f"univariate_test.{k}": v for k, v in buffers.items()}}


def test_lejepa_checkpoints_load_both_ways_strictly(rng):
    x = torch.randn(40, 6, generator=rng)
    test = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 16)
    theirs = _lejepa_state(5)
    assert list(test.state_dict()) == LEJEPA_KEYS == list(theirs)
    test.load_state_dict(theirs, strict=True)  # resume from a lejepa checkpoint
    first = test(x)
    assert torch.equal(first, fs.sigreg(x, 16, step=5))
    ours = test.state_dict()  # and write one lejepa can resume from
    for key, value in _lejepa_state(6).items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape
        assert torch.allclose(ours[key], value, rtol=1e-6, atol=0), key
    resumed = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 16)
    resumed.load_state_dict(ours, strict=True)
    assert torch.equal(resumed(x), test(x))


def test_lejepa_checkpoint_with_another_t_max_is_followed():
    """The knots in a checkpoint decide the rule, as they do in lejepa: t_max follows them."""
    x = torch.randn(30, 5)
    test = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 8)
    test.load_state_dict(_lejepa_state(2, t_max=5.0))
    assert test.univariate_test.t_max == 5.0
    assert torch.equal(test(x), fs.sigreg(x, 8, t_max=5.0, step=2))
    bad = _lejepa_state(2)
    bad["univariate_test.weights"][3] *= 1.01
    with pytest.raises(ValueError, match="univariate_test.weights in the checkpoint is not the trapezoid rule"):
        test.load_state_dict(bad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("t_max", [3.0, 3.3])
def test_lejepa_module_in_16_bits_loads_its_own_checkpoint(rng, dtype, t_max):
    """.to(bfloat16) (precision="bf16-true") rounds the rule's buffers: its own state_dict loads back
    strictly, keeps t_max, and still refuses a rule that is not the trapezoid one."""
    test = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(t_max=t_max), 8).to(dtype)
    state = test.state_dict()
    assert state["univariate_test.t"].dtype == dtype
    again = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(t_max=t_max), 8).to(dtype)
    again.load_state_dict(state, strict=True)
    assert again.univariate_test.t_max == t_max
    lejepa.SlicingUnivariateTest(lejepa.EppsPulley(t_max=t_max), 8).load_state_dict(state, strict=True)
    state["univariate_test.phi"][4] *= 1.05
    with pytest.raises(ValueError, match="univariate_test.phi in the checkpoint is not the trapezoid rule"):
        again.load_state_dict(state)


def test_epps_pulley_alone_and_its_arguments(rng):
    proj = torch.randn(2, 3, 50, 7, generator=rng)
    ep = lejepa.EppsPulley(t_max=5, n_points=9)
    assert torch.equal(ep(proj), R.epps_pulley(proj, 5.0, 9)) and ep(proj).shape == (2, 3, 7)
    assert ep(proj.bfloat16()).dtype == torch.float32  # lejepa's float32 knots promote 16-bit projections
    with pytest.raises(ValueError, match="n_points must be odd"):
        lejepa.EppsPulley(n_points=16)
    with pytest.raises(ValueError, match="integration must be one of.*got 'simpson'"):
        lejepa.EppsPulley(integration="simpson")
    with pytest.raises(ValueError, match="sampler must be one of"):
        lejepa.SlicingUnivariateTest(ep, 4, sampler="rademacher")
    with pytest.raises(TypeError, match="num_slices must be an int"):
        lejepa.SlicingUnivariateTest(ep, 4.0)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'num_slices'"):
        lejepa.SlicingUnivariateTest(ep)


def test_lejepa_any_univariate_test_sees_the_projections(rng):
    """A test other than EppsPulley gets x @ A (*, N, K) with lejepa's directions, then clip and reduce."""

    class SquaredMean(torch.nn.Module):
        def forward(self, proj):
            return proj.mean(dim=-2).square()

    x = torch.randn(3, 20, 6, generator=rng)
    test = lejepa.SlicingUnivariateTest(SquaredMean(), 10, reduction=None, clip_value=0.01)
    a = fs.lejepa_directions(6, 10, 0)
    stats = (x @ a).mean(dim=-2).square()
    assert torch.equal(test(x), torch.where(stats < 0.01, torch.zeros_like(stats), stats))


@pytest.mark.parametrize("shape", [(1, 12), (4, 1, 12), (2, 3, 17, 12)], ids=str)
def test_lejepa_shapes_it_accepts(rng, shape):
    """(*, N, D) and N = 1 (a last batch of one), as lejepa's module computes them."""
    x = torch.randn(*shape, generator=rng)
    test = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 8, reduction=None)
    value, grad = _value_and_grad(test, x)
    a = fs.lejepa_directions(12, 8, 0)
    want, want_grad = _value_and_grad(lambda v: R.epps_pulley(v @ a), x)
    assert value.shape == shape[:-2] + (8,)
    assert rel_err(value, want) <= TOL and rel_err(grad, want_grad) <= TOL


def test_lejepa_adapter_leaves_the_global_rng_alone(rng):
    torch.manual_seed(3)
    state = torch.get_rng_state()
    lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 8)(torch.randn(10, 4, generator=rng))
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------------------------------- VISReg

VISREG_MODULES = {
    "visreg": lambda k, **kw: visreg.VISReg(k, **kw),
    "swd": lambda k, **kw: visreg.SlicedWasserstein(k, **kw),
    "sigreg_visrepo": lambda k, **kw: visreg.SIGReg(num_projections=k, **kw),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", sorted(VISREG_MODULES))
@pytest.mark.parametrize("i", range(4))
def test_visreg_golden_through_the_adapter(golden, key, i, backend):
    """The golden directions replace the module's draw (the golden file stores what the official
    module drew); everything after the draw is the adapter's."""
    device = _backend_device(backend)
    case = golden["visreg_repo"][i]
    ref = case[key]
    module = VISREG_MODULES[key](case["K"], backend=backend)
    module.draw_directions = lambda z: ref["directions"].to(z.device)
    value, grad = _value_and_grad(module, case["z"].to(device))
    assert rel_err(value, ref["value"]) <= TOL and rel_err(grad, ref["grad"]) <= TOL


def _official_directions(key, z, k):
    w = torch.randn(z.shape[-1], k, device=z.device, dtype=z.dtype)
    if key == "visreg":
        return F.normalize(w, dim=0)
    return w / (w.norm(dim=0, keepdim=True) + (1e-6 if key == "swd" else 1e-12))


NATIVE = {
    "visreg": lambda z, a: fs.visreg(z, directions=a),
    "swd": lambda z, a: fs.sliced_wasserstein(z, directions=a, quantile_clamp=1e-4),
    "sigreg_visrepo": lambda z, a: fs.sigreg(z, directions=a),
}


@pytest.mark.parametrize("key", sorted(VISREG_MODULES))
def test_visreg_modules_draw_the_official_directions(rng, key):
    """Seeded alike, the adapter and the official draw give the same directions, and leave torch's
    global RNG in the same state."""
    z = torch.randn(2, 30, 8, generator=rng)
    torch.manual_seed(11)
    got = VISREG_MODULES[key](16)(z)
    after = torch.randn(4)
    torch.manual_seed(11)
    want = NATIVE[key](z, _official_directions(key, z, 16))
    assert torch.equal(got, want)
    assert torch.equal(torch.randn(4), after)


def test_visreg_module_state_and_dtypes(rng):
    sig = visreg.SIGReg(knots=9, t_max=4.0, num_projections=12)
    assert list(sig.state_dict()) == ["t", "phi", "weights"]
    assert torch.equal(sig.weights, fs.slicing.epps_pulley_quadrature(4.0, 9).weights)
    assert list(visreg.VISReg().state_dict()) == list(visreg.SlicedWasserstein().state_dict()) == []
    z = torch.randn(2, 30, 8, generator=rng, dtype=torch.bfloat16)
    # the official SIGReg computes in the input's dtype; the sort losses promote to the float32 target
    assert sig(z).dtype == torch.bfloat16
    assert visreg.VISReg(8)(z).dtype == visreg.SlicedWasserstein(8)(z).dtype == torch.float32
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        visreg.SIGReg(17)


# -------------------------------------------------------------------------------- Rectified LpJEPA


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("i", range(3))
def test_rdmreg_golden_through_the_adapter(golden, monkeypatch, i, backend):
    """The golden targets replace the official sampler's draw, as they did when the golden was made."""
    device = _backend_device(backend)
    case = golden["rdmreg"][i]
    target = case["target_samples"].to(device)
    monkeypatch.setattr(rectified_lpjepa, "sample_lp_distribution", lambda shape, **kw: target)
    value, grad = _value_and_grad(
        lambda z: rectified_lpjepa.sliced_wasserstein_distance_for_one_view(
            z, case["projections"].to(device), "rectified_lp_distribution", chosen_sigma=1.0, backend=backend
        ),
        case["z"].to(device),
    )
    assert rel_err(value, case["value"]) <= TOL and rel_err(grad, case["grad"]) <= TOL


def _projections(rng, m, d):
    return F.normalize(torch.randn(m, d, generator=rng), dim=1)


@pytest.mark.parametrize("target", ["rectified_lp_distribution", "lp_distribution"])
@pytest.mark.parametrize("p", [1.0, 2.0, 1.5])
def test_rdmreg_loss_draws_the_official_targets_in_order(rng, target, p):
    """Targets for z1, then for z2, from the global RNG; shared or per-view projections."""
    z1, z2 = (torch.rand(24, 6, generator=rng) for _ in range(2))
    shared = _projections(rng, 10, 6)
    pair = [shared, _projections(rng, 10, 6)]
    sigma = fs.gn_unit_variance_sigma(p)
    for proj in (shared, pair):
        torch.manual_seed(5)
        got = rectified_lpjepa.rdmreg_loss(z1, z2, proj, target, 0.2, p, sigma)
        torch.manual_seed(5)
        ys = [rectified_lpjepa.sample_lp_distribution((24, 6), p, 0.2, sigma) for _ in range(2)]
        ys = [y.relu() if target == "rectified_lp_distribution" else y for y in ys]
        ps = pair if isinstance(proj, list) else [shared, shared]
        want = (R.rdmreg(z1, ps[0].t(), ys[0]) + R.rdmreg(z2, ps[1].t(), ys[1])) / 2
        assert rel_err(got, want) <= TOL


def test_rdmreg_loss_takes_the_same_matrix_twice(rng):
    """[P, P] or (P, P), as the official code accepts, equals passing P once (same targets drawn)."""
    z1, z2 = (torch.rand(24, 6, generator=rng) for _ in range(2))
    shared = _projections(rng, 10, 6)
    sigma = fs.gn_unit_variance_sigma(1.0)
    results = []
    for proj in (shared, [shared, shared], (shared, shared)):
        torch.manual_seed(5)
        results.append(rectified_lpjepa.rdmreg_loss(z1, z2, proj, "rectified_lp_distribution", 0.0, 1.0, sigma))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_rectified_lp_jepa_loss_returns_the_official_triple(rng):
    z1, z2 = (torch.rand(24, 6, generator=rng) for _ in range(2))
    proj = _projections(rng, 10, 6)
    torch.manual_seed(1)
    loss, sim, reg = rectified_lpjepa.rectified_lp_jepa_loss(
        z1, z2, proj, "rectified_lp_distribution", 25.0, 125.0, chosen_sigma=fs.gn_unit_variance_sigma(1.0)
    )
    torch.manual_seed(1)
    want_reg = rectified_lpjepa.rdmreg_loss(
        z1, z2, proj, "rectified_lp_distribution", chosen_sigma=fs.gn_unit_variance_sigma(1.0)
    )
    assert torch.equal(sim, F.mse_loss(z1, z2)) and torch.equal(reg, want_reg)
    assert torch.equal(loss, 25.0 * sim + 125.0 * reg)


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_sample_lp_distribution_has_the_generalized_gaussian_moments(p):
    """GN_p(loc, sigma_GN): mean loc, unit variance (200k samples: ~0.3% / ~1% standard error)."""
    torch.manual_seed(0)
    y = rectified_lpjepa.sample_lp_distribution((200_000,), p, loc=0.5, scale=fs.gn_unit_variance_sigma(p))
    assert y.dtype == torch.float32
    assert abs(y.mean().item() - 0.5) < 0.02
    assert abs(y.var().item() - 1.0) < 0.05 * (1 + 1 / p)


def test_rectified_lpjepa_module_names_a_real_call_site_imports():
    """The solo loss module imports the sigma helpers with the loss: the adapter has every one."""
    from fused_sigreg.compat.rectified_lpjepa import (  # noqa: F401
        choose_sigma_for_unit_var,
        determine_sigma_for_lp_dist,
        rdmreg_loss,
        rectified_lp_jepa_loss,
        sample_lp_distribution,
        sliced_wasserstein_distance_for_one_view,
    )

    # closed forms: Laplace (p = 1) has variance 2 sigma^2; N(0, s^2) rectified has s^2 (1/2 - 1/(2 pi))
    assert determine_sigma_for_lp_dist(1.0) == pytest.approx(2**-0.5, rel=1e-14)
    assert determine_sigma_for_lp_dist(2.0) == pytest.approx(1.0, rel=1e-14)
    for target_var in (1.0, 0.25):
        want = math.sqrt(target_var / (0.5 - 1 / (2 * math.pi)))
        assert choose_sigma_for_unit_var(2.0, 0.0, target_var) == pytest.approx(want, rel=1e-10)
    assert choose_sigma_for_unit_var(1.0, 0.3) == fs.rgn_unit_variance_sigma(1.0, 0.3)
    with pytest.raises(ValueError, match="target_var must be a finite number > 0"):
        choose_sigma_for_unit_var(1.0, 0.0, target_var=0.0)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        choose_sigma_for_unit_var(1.0, 0.0, max_iter=0)


def test_rectified_lpjepa_arguments_are_checked(rng):
    z = torch.rand(16, 6, generator=rng)
    proj = _projections(rng, 10, 6)
    one_view = rectified_lpjepa.sliced_wasserstein_distance_for_one_view
    with pytest.raises(ValueError, match="chosen_sigma must be given.*gn_unit_variance_sigma"):
        one_view(z, proj, "rectified_lp_distribution")
    with pytest.raises(ValueError, match="target_dist must be one of.*got 'gaussian'"):
        one_view(z, proj, "gaussian", chosen_sigma=1.0)
    with pytest.raises(ValueError, match=r"projections must be \(M, D\) = \(M >= 1, 6\), got shape \(6, 10\)"):
        one_view(z, proj.t(), "lp_distribution", chosen_sigma=1.0)
    with pytest.raises(ValueError, match=r"features must be \(B, D\)"):
        one_view(z[None], proj, "lp_distribution", chosen_sigma=1.0)
    with pytest.raises(ValueError, match="list must hold 2 matrices"):
        rectified_lpjepa.rdmreg_loss(z, z, [proj], "lp_distribution", chosen_sigma=1.0)
    with pytest.raises(TypeError, match="projection_vectors must be a torch.Tensor"):
        rectified_lpjepa.rdmreg_loss(z, z, proj.numpy(), "lp_distribution", chosen_sigma=1.0)


def test_square_projections_are_taken_as_rows(rng):
    """An (M, D) matrix with M = D is used as rows, as the official code uses it."""
    z = torch.rand(16, 6, generator=rng)
    p = _projections(rng, 6, 6)
    y = torch.rand(16, 6, generator=rng)
    got = fs.rdmreg(z, projections=p, target_samples=y, backend="eager")
    assert torch.equal(got, R.rdmreg(z, p.t(), y))
    assert math.isfinite(got.item())
