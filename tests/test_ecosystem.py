"""The drop-ins for lejepa, lightly, stable-pretraining and jepa-science against the real packages'
values and gradients (../shared/golden/ecosystem_cases.pt; ECOSYSTEM.md), their checkpoints, result
dtypes, public names and argument checks."""

import re

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg.compat import jepa_science, lejepa, lightly, rectified_lpjepa, stable_pretraining
from helpers import REPO, rel_err

TOL = 1e-5
# The golden directions are CPU draws, so the golden runs are on CPU tensors; the adapters only
# forward backend= (the kernels' own golden runs, interpreter included, are in tests/backends).
BACKENDS = [None, "eager", "cpu"]

# every Epps–Pulley-family class in the file, with its case count (ECOSYSTEM.md's inventory)
LEJEPA_TESTS = {
    "AndersonDarling": (3, 4),
    "CramerVonMises": (4, 4),
    "Watson": (4, 4),
    "ShapiroWilk": (9, 9),
    "Entropy": (9, 8),
    "Moments": (3, 4),
    "NLL": (8, 4),
    "VCReg": (4, 4),
    "ExtendedJarqueBera": (4, 4),
    "EppsPulley": (6, 11),
}
CASES = {
    **{("lejepa", name): n for name, (n, _) in LEJEPA_TESTS.items()},
    **{("lejepa", f"SlicingUnivariateTest[{name}]"): n for name, (_, n) in LEJEPA_TESTS.items()},
    ("lightly", "SIGReg"): 5,
    ("lightly", "LeJEPALoss"): 2,
    ("lightly", "VISRegLoss"): 2,
    ("stable-pretraining", "EppsPulley"): 3,
    ("stable-pretraining", "SlicedEppsPulley"): 3,
    ("stable-pretraining", "LeJEPA._compute_loss"): 1,
    ("jepa-science", "SIGReg"): 6,
    ("jepa-science", "sigreg_loss"): 2,
}
CASE_IDS = [(source, cls, i) for (source, cls), n in CASES.items() for i in range(n)]


def _build(case, backend):
    """The drop-in for the case's class with its constructor arguments and state: (module or None, call)."""
    source, cls, kwargs = case["id"].split("/")[0], case["cls"], dict(case["kwargs"])
    opt = {} if backend is None else {"backend": backend}
    if source == "lejepa":
        if not cls.startswith("SlicingUnivariateTest"):
            return getattr(lejepa, cls)(**kwargs), None
        inner = kwargs.pop("univariate_test")
        test = getattr(lejepa, inner["cls"])(**inner["kwargs"])
        return lejepa.SlicingUnivariateTest(test, **kwargs, **opt), None
    if source == "lightly":
        module = {"SIGReg": lightly.SIGReg, "LeJEPALoss": lightly.LeJEPALoss, "VISRegLoss": lightly.VISRegLoss}[cls]
        return module(**kwargs, **opt), None
    if source == "stable-pretraining":
        if cls == "EppsPulley":
            return stable_pretraining.EppsPulley(**kwargs), None
        sliced = stable_pretraining.SlicedEppsPulley(**kwargs.get("sigreg", kwargs), **opt)
        if cls == "SlicedEppsPulley":
            return sliced, None
        return sliced, lambda x: stable_pretraining.LeJEPA._compute_loss(x, kwargs["n_global"], sliced, kwargs["lamb"])
    if cls == "SIGReg":
        return jepa_science.SIGReg(**kwargs, **opt), None
    return None, lambda x, **kw: jepa_science.sigreg_loss(x, **kwargs, **kw, **opt)


def _value_error(case, value, want):
    """Relative error, except for Shapiro-Wilk's 1 - |cos|: near a normal sample it is 1 minus a number
    near 1, which float32 (the original's arithmetic) resolves to about 1e-7 absolute, so its error is
    measured on the scale of the cosine (1), the documented tolerance for this ill-conditioned case."""
    inner = case["kwargs"].get("univariate_test", {}).get("cls") if isinstance(case["kwargs"], dict) else None
    if "ShapiroWilk" in (case["cls"], inner):
        return (value.double() - want.double()).abs().max().item()
    return rel_err(value, want)


def _call(case, module, call, inputs):
    """The case's call (ECOSYSTEM.md ``call``), its random state set up as the recipe says."""
    rng = case["rng"]
    if rng["kind"] == "global":
        torch.manual_seed(rng["seed"])
    extra = {}
    if rng["kind"] == "generator_passed":
        extra["generator"] = torch.Generator().manual_seed(rng["seed"])
    fn = call or module
    if "local_proj" in case:
        return fn(local_proj=inputs[1], global_proj=inputs[0])
    out = fn(inputs[0], **extra)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source,cls,i", CASE_IDS, ids=[f"{s}/{c}/{i}" for s, c, i in CASE_IDS])
def test_golden_case_through_the_drop_in(ecosystem, source, cls, i, backend):
    case = ecosystem[source][cls][i]
    if "quirk_batch_dims" in case["tags"] and source == "lejepa":
        pytest.skip(
            "lejepa's test reads dim 0 and dim -2 of (V, N, D) input inconsistently; the drop-in treats each "
            "view as its own sample set (docs/compat.md)"
        )
    if backend == "cpu" and case["x"].dtype == torch.float64:
        pytest.skip("the cpu backend serves float32/bfloat16/float16 only (auto and eager serve float64)")
    module, call = _build(case, backend)
    if module is not None and case.get("state_dict") is not None:
        module.load_state_dict(case["state_dict"], strict=True)
    inputs = [case["x"].clone().requires_grad_()]
    if "local_proj" in case:
        inputs.append(case["local_proj"].clone().requires_grad_())
    value = _call(case, module, call, inputs)
    assert value.shape == case["value"].shape and value.dtype == case["value"].dtype
    if "nan_output" in case["tags"]:  # NLL(alpha < 0.5): NaN exactly where lejepa writes it
        assert torch.equal(value.isnan(), case["value"].isnan())
    assert _value_error(case, value.detach().nan_to_num(), case["value"].nan_to_num()) <= TOL
    grads = torch.autograd.grad(value, inputs, case["grad_output"])
    assert rel_err(grads[0], case["grad"]) <= TOL
    if "local_proj" in case:
        assert rel_err(grads[1], case["grad_local_proj"]) <= TOL
    if "global_step_after" in case:
        assert int(module.global_step) == case["global_step_after"]
    if cls in ("VISRegLoss", "LeJEPA._compute_loss"):
        _check_components(case, module, call, inputs)


def _check_components(case, module, call, inputs):
    if case["cls"] == "VISRegLoss":
        torch.manual_seed(case["rng"]["seed"])
        parts = module.forward_components(local_proj=inputs[1], global_proj=inputs[0])._asdict()
    else:
        module.load_state_dict(case["state_dict"], strict=True)
        parts = dict(zip(("loss", "inv_loss", "sigreg_loss"), call(inputs[0])))
    assert set(parts) == set(case["components"])
    for name, want in case["components"].items():
        assert rel_err(parts[name].detach(), want) <= TOL, name


def test_lightly_lejepa_components_are_lightlys(ecosystem):
    for case in ecosystem["lightly"]["LeJEPALoss"]:
        module, _ = _build(case, None)
        views = torch.cat([case["x"], case["local_proj"]])
        torch.manual_seed(case["rng"]["seed"])
        assert rel_err(module.sigreg(views), case["components"]["sigreg"]) <= TOL
        inv = lightly.lejepa_invariance_loss(all_proj=views, global_proj=case["x"])
        assert rel_err(inv, case["components"]["invariance"]) <= TOL


# ----------------------------------------------------------------------------------- checkpoints

STATEFUL = [(s, c) for (s, c) in CASES if c not in ("sigreg_loss",)]


@pytest.mark.parametrize("source,cls", STATEFUL)
def test_checkpoints_load_both_ways_strictly(ecosystem, source, cls):
    """The drop-in's state_dict has the original's keys, shapes, dtypes and values (so the original
    loads it with strict=True), and the original's loads into the drop-in."""
    for case in ecosystem[source][cls]:
        module, _ = _build(case, None)
        theirs = case["state_dict"]
        if theirs is None:
            assert module is None or not module.state_dict()
            continue
        ours = module.state_dict()
        assert list(ours) == list(theirs)
        for key, want in theirs.items():
            got = ours[key]
            assert got.shape == want.shape and got.dtype == want.dtype, key
            if key.endswith("global_step"):
                continue  # the case's saved step; a fresh module starts at 0 as the original does
            assert torch.allclose(got, want, rtol=1e-6, atol=0), key
        module.load_state_dict(theirs, strict=True)


def test_lightly_visreg_loss_has_no_state():
    assert not lightly.VISRegLoss().state_dict()


def test_a_checkpoint_with_another_rule_is_followed_or_refused():
    saved = lightly.SIGReg(knots=9, t_max=4.0).state_dict()
    module = lightly.SIGReg(knots=9)
    module.load_state_dict(saved, strict=True)
    assert module.t_max == 4.0  # the knots say t_max = 4: the statistic follows the checkpoint
    saved["weights"] = saved["weights"] * 2
    with pytest.raises(ValueError, match="weights in the checkpoint is not the trapezoid rule"):
        module.load_state_dict(saved)
    science = jepa_science.SIGReg(n_knots=9)
    science.load_state_dict(jepa_science.SIGReg(n_knots=9, t_max=2.0).state_dict())
    assert science.t_max == 2.0


# ---------------------------------------------------------------------------------- result dtypes


def _drop_ins():
    """Each drop-in as a function of one (V, N, D) tensor."""
    return {
        "lightly.SIGReg": lambda x: lightly.SIGReg(num_vectors=8)(x),
        "lightly.LeJEPALoss": lambda x: lightly.LeJEPALoss(sigreg_num_vectors=8)(local_proj=x, global_proj=x),
        "lightly.VISRegLoss": lambda x: lightly.VISRegLoss(num_slices=8)(local_proj=x, global_proj=x),
        "lightly.visreg_shape_loss": lambda x: lightly.visreg_shape_loss(x, 8),
        "stable_pretraining.EppsPulley": lambda x: stable_pretraining.EppsPulley()(x[0]),
        "stable_pretraining.SlicedEppsPulley": lambda x: stable_pretraining.SlicedEppsPulley(8)(x[0]),
        "jepa_science.SIGReg": lambda x: jepa_science.SIGReg(8)(x),
        "jepa_science.sigreg_loss": lambda x: jepa_science.sigreg_loss(x, 8),
        "lejepa.SlicingUnivariateTest": lambda x: lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), 8)(x[0]),
        "rectified_lpjepa.sliced_wasserstein_distance_for_one_view": lambda x: (
            rectified_lpjepa.sliced_wasserstein_distance_for_one_view(
                x[0].relu(), _unit_rows(8, x), "rectified_lp_distribution", chosen_sigma=1.0
            )
        ),
        "rectified_lpjepa.rdmreg_loss": lambda x: rectified_lpjepa.rdmreg_loss(
            x[0].relu(), x[1].relu(), _unit_rows(8, x), "rectified_lp_distribution", chosen_sigma=1.0
        ),
    }


def _unit_rows(m, x):
    """(m, D) unit projection rows in x's dtype (the official code multiplies features @ P.T: one dtype)."""
    p = torch.randn(m, x.shape[-1], generator=torch.Generator().manual_seed(0))
    return (p / p.norm(dim=1, keepdim=True)).to(x.dtype)


BF, H, F, D64 = torch.bfloat16, torch.float16, torch.float32, torch.float64
# The official result dtypes for (bf16, fp16, fp64 input, fp32 under bf16 autocast, bf16 under bf16
# autocast), from ECOSYSTEM.md's dtype summary and the packages run on CPU (lightly 1.6.0,
# stable-pretraining 0.1.8, jepa-science 0.1.0). Where the original raises (lejepa and stable-pretraining's
# sliced tests on anything but float32, their EppsPulley on float64) the drop-in computes: float32, or
# float64 for float64 input (docs/compat.md).
OFFICIAL_DTYPES = {
    "lightly.SIGReg": (F, F, D64, BF, BF),
    "lightly.LeJEPALoss": (F, F, D64, F, BF),
    "lightly.VISRegLoss": (BF, H, D64, F, BF),
    "lightly.visreg_shape_loss": (BF, H, D64, F, BF),
    "stable_pretraining.EppsPulley": (F, F, D64, BF, BF),
    "stable_pretraining.SlicedEppsPulley": (F, F, D64, BF, BF),
    "jepa_science.SIGReg": (BF, H, D64, BF, BF),
    "jepa_science.sigreg_loss": (BF, H, D64, BF, BF),
    "lejepa.SlicingUnivariateTest": (F, F, D64, BF, BF),
    # features @ P.T in one dtype; under autocast that matmul and the sorted differences' mean after it
    "rectified_lpjepa.sliced_wasserstein_distance_for_one_view": (BF, H, D64, BF, BF),
    "rectified_lpjepa.rdmreg_loss": (BF, H, D64, BF, BF),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_DTYPES))
def test_result_dtypes_are_the_official_ones(name, rng):
    fn = _drop_ins()[name]
    x = torch.randn(2, 12, 6, generator=rng)
    got = [fn(x.to(BF)).dtype, fn(x.to(H)).dtype, fn(x.double()).dtype]
    for dtype in (F, BF):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got.append(fn(x.to(dtype)).dtype)
    assert tuple(got) == OFFICIAL_DTYPES[name]


def test_rectified_lp_jepa_loss_under_autocast_has_the_official_dtypes(rng):
    """(loss, sim_loss, reg_loss): the invariance term is mse_loss, which autocast runs in float32; the
    RDMReg term has the autocast dtype; their weighted sum promotes to float32."""
    z = torch.randn(2, 12, 6, generator=rng).relu()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rectified_lpjepa.rectified_lp_jepa_loss(
            z[0], z[1], _unit_rows(8, z), "lp_distribution", 25.0, 125.0, chosen_sigma=1.0
        )
    assert tuple(v.dtype for v in out) == (F, F, BF)


def test_16_bit_results_are_float32_arithmetic_rounded_once(rng):
    """16-bit input is computed in float32 from the same 16-bit values and rounded once at the end."""
    x = torch.randn(2, 16, 8, generator=rng).to(torch.bfloat16)
    torch.manual_seed(3)
    got = jepa_science.sigreg_loss(x, 16)
    torch.manual_seed(3)
    a = torch.randn(8, 16, dtype=torch.bfloat16)
    a = a / a.norm(p=2, dim=0, keepdim=True)
    want = fs.sigreg(x.float(), directions=a.float(), reduction=None, backend="eager").mean(-1)
    assert torch.equal(got, want.to(torch.bfloat16))


# ----------------------------------------------------------------------------------- public names


def _documented_names():
    """docs/compat.md's table: official module -> (compat module, the public names a call site imports)."""
    text = (REPO / "docs" / "compat.md").read_text()
    rows = re.findall(r"^\| `([\w.]+)` \| `(fused_sigreg\.compat\.\w+)` \| (.+) \|$", text, flags=re.M)
    return {official: (compat, re.findall(r"`(\w+)`", names)) for official, compat, names in rows}


def test_every_documented_official_name_imports_from_its_drop_in():
    import importlib

    table = _documented_names()
    # each official module the drop-ins replace is in the table
    for official in (
        "lejepa.multivariate",
        "lejepa.univariate",
        "lightly.loss",
        "lightly.loss.lejepa_loss",
        "lightly.loss.visreg_loss",
        "stable_pretraining.methods.lejepa",
        "jepa_science",
        "visreg.losses",
        "solo.losses.rectified_lpjepa",
    ):
        assert official in table, official
    for official, (compat, names) in table.items():
        module = importlib.import_module(compat)
        assert names, official
        for name in names:
            assert hasattr(module, name), f"{compat} lacks {name} (imported from {official})"
            assert name in module.__all__, f"{compat}.__all__ lacks {name}"


def test_jepa_science_quadrature_is_theirs():
    t, w = jepa_science.epps_pulley_quadrature(9, 4.0)
    rule = fs.slicing.epps_pulley_quadrature(4.0, 9)
    assert t.dtype == torch.float32 and torch.allclose(t, rule.t) and torch.allclose(w, rule.weights)
    t64, w64 = jepa_science.epps_pulley_quadrature(5, 2.0, dtype=torch.float64)
    assert t64.dtype == w64.dtype == torch.float64


# ----------------------------------------------------------------------------- one-line swap, checks


def _lightly_training_step(LeJEPALoss, VISRegLoss):
    """A training step as lightly's docs write it, the loss classes being the only thing swapped."""
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.randn(6, 32, 10)
    losses = []
    for criterion in (LeJEPALoss(), VISRegLoss()):
        global_proj = torch.stack([model(v) for v in images[:2]])
        local_proj = torch.stack([model(v) for v in images[2:]])
        loss = criterion(local_proj=local_proj, global_proj=global_proj)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses, [p.detach().clone() for p in model.parameters()]


def test_lightly_training_step_runs_unchanged_with_the_drop_ins():
    losses, params = _lightly_training_step(lightly.LeJEPALoss, lightly.VISRegLoss)
    assert all(torch.isfinite(v) for v in losses)
    # the same step with the eager backend forced agrees: the swap changed nothing but the speed
    eager = _lightly_training_step(
        lambda: lightly.LeJEPALoss(backend="eager"), lambda: lightly.VISRegLoss(backend="eager")
    )
    for a, b in zip(losses + params, eager[0] + eager[1]):
        assert rel_err(a, b) <= TOL


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: lightly.SIGReg(knots=1), "knots"),
        (lambda: lightly.SIGReg(t_max=0.0), "t_max"),
        (lambda: lightly.SIGReg(num_vectors=0), "num_vectors"),
        (lambda: lightly.SIGReg(gather_distributed="yes"), "gather_distributed"),
        (lambda: lightly.SIGReg(backend="nosuch"), "backend"),
        (lambda: lightly.LeJEPALoss(lambda_param=1.5), "lambda_param"),
        (lambda: lightly.VISRegLoss(lambda_param=-0.1), "lambda_param"),
        (lambda: lightly.VISRegLoss(lambda_shape=-1.0), "lambda_shape"),
        (lambda: lightly.VISRegLoss(eps=0.0), "eps"),
        (lambda: lightly.VISRegLoss(num_slices=0), "num_slices"),
        (lambda: stable_pretraining.EppsPulley(n_points=4), "n_points"),
        (lambda: stable_pretraining.SlicedEppsPulley(num_slices=0), "num_slices"),
        (lambda: stable_pretraining.LeJEPA(), "_compute_loss"),
        (lambda: jepa_science.SIGReg(n_knots=4), "n_knots"),
        (lambda: jepa_science.SIGReg(t_max=-1.0), "t_max"),
        (lambda: jepa_science.SIGReg(reduction="avg"), "reduction"),
        (lambda: jepa_science.sigreg_loss(torch.randn(4, 3), reduction=None), "reduction"),
        (lambda: jepa_science.epps_pulley_quadrature(4, 3.0), "n_knots"),
    ],
)
def test_bad_arguments_name_the_argument(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


@pytest.mark.parametrize(
    "local,glob,match",
    [
        ((4, 3), (1, 4, 3), "local_proj must have shape"),
        ((1, 4, 3), (4, 3), "global_proj must have shape"),
        ((1, 5, 3), (1, 4, 3), "same batch size"),
        ((0, 4, 3), (1, 4, 3), "local_proj must not be empty"),
        ((1, 1, 3), (1, 1, 3), "at least 2"),  # VISReg's std needs two samples
    ],
)
def test_lightly_view_shapes_are_checked(local, glob, match):
    with pytest.raises(ValueError, match=match):
        lightly.VISRegLoss(num_slices=4)(local_proj=torch.randn(local), global_proj=torch.randn(glob))


def test_stable_pretraining_compute_loss_checks_its_arguments():
    sliced = stable_pretraining.SlicedEppsPulley(8)
    with pytest.raises(ValueError, match="n_global"):
        stable_pretraining.LeJEPA._compute_loss(torch.randn(2, 8, 4), 3, sliced, 0.02)
    with pytest.raises(ValueError, match="all_projected"):
        stable_pretraining.LeJEPA._compute_loss(torch.randn(8, 4), 1, sliced, 0.02)


def test_drop_ins_leave_the_rng_as_the_originals_do():
    """lightly and jepa-science draw once per call from the global RNG (as the originals: a seeded run
    continues identically); stable-pretraining and lejepa never touch it."""
    x = torch.randn(2, 8, 4)
    for fn, draws in (
        (lambda: lightly.SIGReg(num_vectors=5)(x), 1),
        (lambda: jepa_science.SIGReg(5)(x), 1),
        (lambda: stable_pretraining.SlicedEppsPulley(5)(x[0]), 0),
    ):
        torch.manual_seed(0)
        fn()
        after = torch.randn(3)
        torch.manual_seed(0)
        for _ in range(draws):
            torch.randn(4, 5)
        assert torch.equal(after, torch.randn(3))


# ---------------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", ["lightly.SIGReg", "jepa_science.sigreg_loss"])
def test_compiled_drop_ins_draw_what_eager_draws(name, rng):
    """The official draw (global RNG; the same function serves every drop-in that draws so, compat.visreg's
    too) runs outside the graph: compiled, a seeded call gives eager's directions and leaves the global
    RNG where eager leaves it (traced, inductor's RNG would not)."""
    fn = {
        "lightly.SIGReg": lightly.SIGReg(num_vectors=16),  # the global RNG (every drop-in that draws from it)
        "jepa_science.sigreg_loss": lambda x: jepa_science.sigreg_loss(x, 16),  # generator= or the global RNG
    }[name]
    compiled = torch.compile(fn)
    x = torch.randn(2, 24, 8, generator=rng)
    for seed in (0, 1):
        torch.manual_seed(seed)
        want, after = fn(x), torch.randn(2)
        torch.manual_seed(seed)
        got = compiled(x)
        assert rel_err(got, want) <= TOL and torch.equal(torch.randn(2), after)


def test_fullgraph_names_the_fix():
    compiled = torch.compile(lambda x: jepa_science.sigreg_loss(x, 16), fullgraph=True)
    with pytest.raises(Exception, match="directions="):
        compiled(torch.randn(24, 8))


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_drop_ins_equal_eager_or_raise(rng, reentrant):
    """Activation checkpointing restores the global RNG for its recompute: a drop-in drawing from it gets
    the same directions and the same gradient. A generator= it does not restore: raises, naming the fix."""
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(2, 16, 6, generator=rng).requires_grad_()
    module = jepa_science.SIGReg(8)
    torch.manual_seed(5)
    (want,) = torch.autograd.grad(module(x * 1.0).sum(), x)
    torch.manual_seed(5)
    checkpoint(lambda v: module(v * 1.0).sum(), x, use_reentrant=reentrant).backward()  # (reentrant: no .grad())
    assert torch.equal(x.grad, want)
    gen = torch.Generator().manual_seed(1)
    loss = checkpoint(lambda v: module(v * 1.0, generator=gen).sum(), x, use_reentrant=reentrant)
    with pytest.raises(RuntimeError, match="activation checkpointing.*outside the checkpointed function"):
        loss.backward()
