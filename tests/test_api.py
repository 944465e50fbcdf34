"""Public API behaviour: dtypes, shapes, modules, direction sources, objectives."""

import pytest
import torch
import torch.nn.functional as F

import fused_sigreg as fs
from fused_sigreg import reference as R
from fused_sigreg.slicing import normal_quantiles
from helpers import rel_err

OPS = {
    "sigreg": lambda x, **kw: fs.sigreg(x, **kw),
    "sliced_wasserstein": lambda x, **kw: fs.sliced_wasserstein(x, **kw),
    "visreg": lambda x, **kw: fs.visreg(x, **kw),
    "rdmreg": lambda x, **kw: fs.rdmreg(torch.relu(x), **kw),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_accumulate_in_float32(op, dtype, rng):
    x = torch.randn(3, 33, 7, generator=rng).to(dtype).requires_grad_()
    kw = dict(generator=torch.Generator().manual_seed(5))
    out = OPS[op](x, **kw)
    out.backward()
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    # Low-precision inputs are upcast once: same numbers as the upcast input.
    same = OPS[op](x.detach().to(out.dtype), generator=torch.Generator().manual_seed(5))
    assert rel_err(out, same) <= 1e-12


@pytest.mark.parametrize(
    "shape,reduction,expected",
    [((10, 4), None, (6,)), ((3, 10, 4), None, (3, 6)), ((3, 10, 4), "mean", ()), ((10, 4), "sum", ())],
)
def test_sigreg_reduction_shapes(shape, reduction, expected, rng):
    x = torch.randn(*shape, generator=rng)
    out = fs.sigreg(x, num_slices=6, step=0, reduction=reduction)
    assert out.shape == expected


def test_sigreg_reduction_consistent(rng):
    x = torch.randn(3, 40, 5, generator=rng)
    per = fs.sigreg(x, num_slices=9, step=4, reduction=None)
    assert torch.allclose(fs.sigreg(x, num_slices=9, step=4), per.mean())
    assert torch.allclose(fs.sigreg(x, num_slices=9, step=4, reduction="sum"), per.sum())


def test_sigreg_module_steps_and_reproducibility(rng):
    x = torch.randn(64, 8, generator=rng)
    m1, m2 = fs.SIGReg(num_slices=16), fs.SIGReg(num_slices=16)
    first = [m1(x) for _ in range(3)]
    assert m1.global_step.item() == 3
    assert not torch.equal(first[0], first[1])  # a new draw each step
    assert torch.equal(torch.stack(first), torch.stack([m2(x) for _ in range(3)]))
    for step, value in enumerate(first):
        assert torch.equal(value, fs.sigreg(x, num_slices=16, step=step))
    assert "global_step" in m1.state_dict()


def _writes():
    """Ways resume and EMA code write a module's step, several of which bypass the version counter."""
    yield "fill_", lambda m, s: m.global_step.fill_(s)
    yield ".data.fill_", lambda m, s: m.global_step.data.fill_(s)
    yield ".data.copy_", lambda m, s: m.global_step.data.copy_(torch.tensor(s))
    yield "numpy view", lambda m, s: m.global_step.numpy().__setitem__((), s)
    yield "load_state_dict", lambda m, s: m.load_state_dict({"global_step": torch.tensor(s)})
    yield "new buffer", lambda m, s: setattr(m, "global_step", torch.tensor(s))


@pytest.mark.parametrize("write", [w for _, w in _writes()], ids=[n for n, _ in _writes()])
def test_sigreg_module_uses_its_buffer_however_it_was_written(rng, write):
    """The step a module draws equals its global_step at call time: a cached host copy would miss the
    writes that bypass the version counter and draw a stale step's directions for good."""
    x = torch.randn(64, 8, generator=rng)
    module = fs.SIGReg(num_slices=16)
    module(x)
    for step in (10, 20):
        write(module, step)
        assert torch.equal(module(x), fs.sigreg(x, num_slices=16, step=step))
        assert torch.equal(module(x), fs.sigreg(x, num_slices=16, step=step + 1))
        assert int(module.global_step) == step + 2


@pytest.mark.parametrize("make", [lambda: fs.SlicedWasserstein(8), lambda: fs.VISReg(8), lambda: fs.RDMReg(8)])
def test_sort_modules_use_their_buffer_however_it_was_written(rng, make):
    x = torch.randn(10, 5, generator=rng).relu()
    for _, write in _writes():
        module, fresh = make(), make()
        module(x)
        write(module, 7)
        fresh.global_step.fill_(7)
        assert torch.equal(module(x), fresh(x))


def test_sigreg_module_under_inference_mode(rng):
    x = torch.randn(64, 8, generator=rng)
    with torch.inference_mode():
        inference = fs.SIGReg(num_slices=16)
        assert torch.equal(inference(x), fs.sigreg(x, num_slices=16, step=0))
        assert torch.equal(inference(x), fs.sigreg(x, num_slices=16, step=1))


def test_generator_reproducible_and_default_rng_used(rng):
    x = torch.randn(50, 6, generator=rng)
    a = fs.sliced_wasserstein(x, generator=torch.Generator().manual_seed(1))
    b = fs.sliced_wasserstein(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = fs.visreg(x)
    torch.manual_seed(0)
    assert torch.equal(c, fs.visreg(x))


def test_default_slice_counts(rng):
    x = torch.randn(20, 5, generator=rng)
    assert fs.sigreg(x, step=0, reduction=None).shape == (256,)
    # explicit directions define K
    a = torch.nn.functional.normalize(torch.randn(5, 11, generator=rng), dim=0)
    assert fs.sigreg(x, directions=a, reduction=None).shape == (11,)


def test_modules_match_functional(rng):
    z = torch.randn(2, 30, 6, generator=rng)
    g = lambda: torch.Generator().manual_seed(9)
    assert torch.equal(
        fs.VISReg(12, 0.5, 2.0, 3.0)(z, generator=g()),
        fs.visreg(z, 12, generator=g(), scale_weight=0.5, shape_weight=2.0, center_weight=3.0),
    )
    assert torch.equal(
        fs.SlicedWasserstein(12)(z, generator=g()), fs.sliced_wasserstein(z, 12, generator=g(), quantile_clamp=1e-4)
    )
    zr = torch.relu(z)
    assert torch.equal(fs.RDMReg(12, p=1.5, mu=0.1)(zr, generator=g()), fs.rdmreg(zr, 12, p=1.5, mu=0.1, generator=g()))


def test_rdmreg_target_defaults_to_sigma_gn(rng):
    z = torch.relu(torch.randn(40, 5, generator=rng))
    a = torch.nn.functional.normalize(torch.randn(5, 7, generator=rng), dim=0)
    y = fs.sample_rgg(z.shape, 1.0, 0.0, fs.gn_unit_variance_sigma(1.0), generator=torch.Generator().manual_seed(2))
    # the sampler draws directions first when none are given; with explicit ones it only draws Y
    got = fs.rdmreg(z, directions=a, generator=torch.Generator().manual_seed(2), backend="eager")
    assert torch.equal(got, R.rdmreg(z, a, y))
    rgn = fs.rdmreg(z, directions=a, sigma="sigma_RGN", generator=torch.Generator().manual_seed(2), backend="eager")
    y_rgn = fs.sample_rgg(
        z.shape, 1.0, 0.0, fs.rgn_unit_variance_sigma(1.0), generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(rgn, R.rdmreg(z, a, y_rgn))


def test_lejepa_loss(rng):
    all_emb = torch.randn(5, 32, 6, generator=rng)
    global_emb = all_emb[:2]
    loss = fs.lejepa_loss(global_emb, all_emb, lambd=0.1, num_slices=8, step=3)
    pred = (global_emb.mean(0) - all_emb).square().mean()
    reg = torch.stack([fs.sigreg(v, num_slices=8, step=3) for v in all_emb]).mean()
    assert torch.allclose(loss, 0.9 * pred + 0.1 * reg, rtol=1e-6)


def test_visreg_loss(rng):
    proj = torch.randn(4, 24, 6, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(6, 10, generator=rng), dim=0)
    loss = fs.visreg_loss(proj, n_global=2, lamb=0.9, directions=a)
    inv = (proj - proj[:2].mean(0, keepdim=True)).square().mean()
    reg = R.visreg(proj, a, normal_quantiles(24))
    assert torch.allclose(loss, 0.9 * reg + 0.1 * inv, rtol=1e-6)


def test_rectified_lpjepa_loss(rng):
    z1, z2 = (torch.relu(torch.randn(30, 6, generator=rng)) for _ in range(2))
    a = torch.nn.functional.normalize(torch.randn(6, 10, generator=rng), dim=0)
    y1, y2 = (fs.sample_rgg((30, 6), generator=rng) for _ in range(2))
    # explicit directions (shared by the views) and one target per view make the objective deterministic
    loss = 25 * F.mse_loss(z1, z2) + 125 * 0.5 * (R.rdmreg(z1, a, y1) + R.rdmreg(z2, a, y2))
    got = fs.rectified_lpjepa_loss(z1, z2, directions=a, target_samples=torch.stack((y1, y2)))
    assert torch.allclose(got, loss, rtol=1e-6)
    with pytest.raises(ValueError, match=r"target_samples must match z \(shape \(2, 30, 6\)"):
        fs.rectified_lpjepa_loss(z1, z2, directions=a, target_samples=y1)


def test_rectified_lpjepa_loss_shares_projections_between_views(rng):
    z1, z2 = (torch.relu(torch.randn(30, 6, generator=rng)) for _ in range(2))
    got = fs.rectified_lpjepa_loss(z1, z2, num_projections=16, generator=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(6, 16, generator=gen)  # what rdmreg draws first: the directions, then the targets
    a = a / a.norm(dim=0)
    y = fs.sample_rgg((2, 30, 6), generator=gen)
    want = 25 * F.mse_loss(z1, z2) + 125 * 0.5 * (R.rdmreg(z1, a, y[0]) + R.rdmreg(z2, a, y[1]))
    assert torch.allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
    "call,own",
    [
        (lambda x: fs.lejepa_loss(x[:2], x, lamb=0.02), "lambd"),
        (lambda x: fs.visreg_loss(x, 2, lambd=0.5), "lamb"),
        (lambda x: fs.rectified_lpjepa_loss(x[0], x[1], invariance_loss_weight=25.0), "lamb_inv"),
    ],
)
def test_objectives_name_themselves_for_unknown_keywords(call, own):
    with pytest.raises(TypeError, match=f"\\(\\) got an unexpected keyword argument.*own are.*{own}"):
        call(torch.rand(3, 8, 4))


def test_directions_requiring_grad_are_differentiated(rng):
    x = torch.randn(20, 4, generator=rng, dtype=torch.float64)
    a = torch.randn(4, 3, generator=rng, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: fs.sigreg(x, directions=a), (a,))


def test_non_finite_inputs_propagate_by_default(rng):
    x = torch.randn(10, 3, generator=rng)
    x[2, 1] = float("nan")
    assert torch.isnan(fs.sigreg(x, step=0))
    with pytest.raises(ValueError, match="finite"):
        fs.sigreg(x, step=0, check_finite=True)
