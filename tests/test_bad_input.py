"""Every malformed call raises ValueError/TypeError naming what was expected and what came."""

import pytest
import torch

import fused_sigreg as fs

X = torch.randn(16, 4)
A = torch.nn.functional.normalize(torch.randn(4, 5), dim=0)

OPS = {
    "sigreg": fs.sigreg,
    "sliced_wasserstein": fs.sliced_wasserstein,
    "visreg": fs.visreg,
    "rdmreg": fs.rdmreg,
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.randn(4), ValueError, r"\(\*, N, D\) with at least 2 dims, got 1"),
        (torch.tensor(1.0), ValueError, r"\(\*, N, D\) with at least 2 dims, got 0"),
        (torch.randn(0, 4), ValueError, "must not be empty"),
        (torch.randn(2, 0, 3, 4), ValueError, "must not be empty"),
        (torch.randn(5, 0), ValueError, "must not be empty"),
        (torch.ones(5, 4, dtype=torch.int64), TypeError, "floating dtype.*got torch.int64"),
        (torch.ones(5, 4, dtype=torch.bool), TypeError, "floating dtype.*got torch.bool"),
        ([[1.0, 2.0], [3.0, 4.0]], TypeError, "torch.Tensor, got list"),
    ],
)
def test_bad_embeddings(op, x, exc, match):
    with pytest.raises(exc, match=match):
        OPS[op](x)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize(
    "directions,exc,match",
    [
        (torch.randn(3, 5), ValueError, r"\(D, K\) = \(4, K >= 1\), got shape \(3, 5\)"),
        (torch.randn(4), ValueError, r"\(D, K\) = \(4, K >= 1\), got shape \(4,\)"),
        (torch.randn(4, 0), ValueError, r"K >= 1"),
        (torch.ones(4, 5, dtype=torch.int32), TypeError, "floating dtype"),
        (torch.randn(4, 5, device="meta"), ValueError, "device cpu, got meta"),
        ("directions", TypeError, "torch.Tensor, got str"),
    ],
)
def test_bad_directions(op, directions, exc, match):
    with pytest.raises(exc, match=match):
        OPS[op](X, directions=directions)


@pytest.mark.parametrize("op", sorted(OPS))
def test_mismatched_num_slices_and_directions(op):
    with pytest.raises(ValueError, match="does not match the 5 columns"):
        OPS[op](X, 7, directions=A)
    with pytest.raises(ValueError, match="does not match the 5 rows of projections"):
        OPS[op](X, 7, projections=A.t())


@pytest.mark.parametrize("op", sorted(OPS))
def test_projections_have_the_official_layout(op):
    # (M, D): a (D, M) matrix passed as projections names the layout; both at once are refused
    with pytest.raises(ValueError, match=r"projections must be \(M, D\) = \(M >= 1, 4\), got shape \(4, 5\)"):
        OPS[op](X, projections=A)
    with pytest.raises(ValueError, match="at most one of directions=, projections=.*got directions, projections"):
        OPS[op](X, directions=A, projections=A.t())
    with pytest.raises(TypeError, match="projections must be a torch.Tensor"):
        OPS[op](X, projections=A.tolist())


def test_one_direction_source_only():
    with pytest.raises(ValueError, match="at most one of directions=, projections=, step=, generator="):
        fs.sigreg(X, directions=A, step=3)
    with pytest.raises(ValueError, match="at most one"):
        fs.sigreg(X, step=3, generator=torch.Generator())


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(t_max=0.0), ValueError, "t_max must be a finite number > 0, got 0.0"),
        (dict(t_max=-1.0), ValueError, "t_max must be"),
        (dict(t_max=float("inf")), ValueError, "t_max must be"),
        (dict(n_points=1), ValueError, "n_points must be an int >= 2.*got 1"),
        (dict(n_points=3.0), TypeError, "n_points must be an int"),
        (dict(reduction="max"), ValueError, "reduction must be one of 'mean', 'sum', None, got 'max'"),
        (dict(num_slices=0), ValueError, "num_slices must be an int >= 1, got 0"),
        (dict(num_slices=2.5), TypeError, "num_slices must be an int"),
        (dict(step=-1), ValueError, "step must be an int >= 0"),
        (dict(step=2**64), ValueError, r"step must be an int in \[0, 2\*\*63 - 1\].*got 18446744073709551616"),
        (dict(step=torch.tensor(2.0)), TypeError, "step must be an int or a one-element integer tensor"),
        (dict(generator="seed"), TypeError, "torch.Generator, got str"),
    ],
)
def test_bad_sigreg_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        fs.sigreg(X, **kw)


def test_generator_on_another_device():
    with pytest.raises(ValueError, match="generator must be on the input's device meta, got cpu"):
        fs.sigreg(torch.randn(16, 4, device="meta"), generator=torch.Generator())


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: fs.SIGReg(t_max=0.0), ValueError, "t_max must be"),
        (lambda: fs.SIGReg(n_points=1), ValueError, "n_points must be"),
        (lambda: fs.SIGReg(reduction="none"), ValueError, "reduction must be one of"),
        (lambda: fs.SIGReg(num_slices=-3), ValueError, "num_slices must be an int >= 1, got -3"),
        (lambda: fs.SIGReg(num_slices=2.5), TypeError, "num_slices must be an int"),
        (
            lambda: fs.SIGReg(backend="gpu"),
            ValueError,
            "backend must be one of auto, eager, triton, cuda, cpu; got 'gpu'",
        ),
        (lambda: fs.SIGReg(clip_value="a"), TypeError, "clip_value must be a number"),
        (lambda: fs.SIGReg(memory="max"), ValueError, "memory must be 'auto' or 'min'"),
        (lambda: fs.VISReg(num_projections=0), ValueError, "num_projections must be an int >= 1, got 0"),
        (lambda: fs.VISReg(scale_weight=float("nan")), ValueError, "scale_weight must be"),
        (lambda: fs.VISReg(backend=3), ValueError, "backend must be one of"),
        (
            lambda: fs.SlicedWasserstein(quantile_clamp=0.7),
            ValueError,
            r"quantile_clamp must be a number in \(0, 0.5\)",
        ),
        (lambda: fs.SlicedWasserstein(num_projections="8"), TypeError, "num_projections must be an int"),
        (lambda: fs.RDMReg(num_projections=0), ValueError, "num_projections must be an int >= 1"),
        (lambda: fs.RDMReg(mu="a"), TypeError, "mu must be a number"),
        (lambda: fs.RDMReg(backend="fast"), ValueError, "backend must be one of"),
    ],
)
def test_module_constructors_check_what_the_op_would(make, exc, match):
    """Every argument the functional op checks is checked when the module is built, not at its first call."""
    with pytest.raises(exc, match=match):
        make()


def test_check_finite_covers_target_samples():
    target = torch.rand(16, 4)
    target[3, 1] = float("nan")
    with pytest.raises(ValueError, match="target_samples must be finite"):
        fs.rdmreg(torch.relu(X), directions=A, target_samples=target, check_finite=True)


@pytest.mark.parametrize("p", [0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_lp_parameter(p):
    z = torch.relu(X)
    exc, match = (
        (TypeError, "must be a number, got str '1'") if isinstance(p, str) else (ValueError, "finite number > 0")
    )
    with pytest.raises(exc, match=f"p .*{match}"):
        fs.rdmreg(z, directions=A, p=p)
    with pytest.raises(exc, match=match):
        fs.sample_rgg((3, 2), p=p)
    with pytest.raises(exc):
        fs.RDMReg(p=p)


@pytest.mark.parametrize("sigma", [0.0, -2.0, "sigma_XYZ"])
def test_bad_rgg_sigma(sigma):
    with pytest.raises(ValueError, match="sigma must be"):
        fs.rdmreg(torch.relu(X), directions=A, sigma=sigma)


def test_bad_target_samples():
    z = torch.relu(X)
    with pytest.raises(ValueError, match=r"target_samples must match z \(shape \(16, 4\)"):
        fs.rdmreg(z, directions=A, target_samples=torch.rand(15, 4))
    with pytest.raises(TypeError, match="target_samples must have a floating dtype"):
        fs.rdmreg(z, directions=A, target_samples=torch.ones(16, 4, dtype=torch.int64))


@pytest.mark.parametrize("op", sorted(OPS))
def test_check_finite_opt_in(op):
    x = X.clone()
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x must be finite|z must be finite"):
        OPS[op](x, directions=A, check_finite=True)


@pytest.mark.parametrize("op", sorted(OPS))
def test_unknown_backend(op):
    with pytest.raises(ValueError, match="backend must be one of auto, eager, triton, cuda, cpu; got 'fast'"):
        OPS[op](X, directions=A, backend="fast")


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("FUSED_SIGREG_BACKEND", "gpu")
    with pytest.raises(ValueError, match="FUSED_SIGREG_BACKEND must be one of .*got 'gpu'"):
        fs.sigreg(X, directions=A)


def test_objective_shapes():
    with pytest.raises(ValueError, match="share \\(N, D\\)"):
        fs.lejepa_loss(torch.randn(2, 8, 4), torch.randn(3, 9, 4))
    with pytest.raises(ValueError, match="must be \\(V, N, D\\)"):
        fs.lejepa_loss(torch.randn(8, 4), torch.randn(3, 8, 4))
    with pytest.raises(ValueError, match="n_global must be an int >= 1"):
        fs.visreg_loss(torch.randn(3, 8, 4), n_global=0)
    with pytest.raises(ValueError, match="z2 must match z1"):
        fs.rectified_lpjepa_loss(torch.rand(8, 4), torch.rand(8, 5))


@pytest.mark.parametrize("op", ["sliced_wasserstein", "visreg", "rdmreg"])
def test_sort_ops_name_num_projections(op):
    with pytest.raises(ValueError, match="num_projections must be an int >= 1, got 0"):
        getattr(fs, op)(torch.relu(X), num_projections=0)
    with pytest.raises(ValueError, match="num_projections=6 does not match the 5 columns"):
        getattr(fs, op)(torch.relu(X), num_projections=6, directions=A)


def test_integral_types_are_accepted_where_ints_are():
    np = pytest.importorskip("numpy")
    expected = fs.sigreg(X, num_slices=5, step=3, n_points=9)
    assert torch.equal(fs.sigreg(X, num_slices=np.int64(5), step=np.int64(3), n_points=np.int32(9)), expected)
    assert torch.equal(fs.sigreg(X, num_slices=5, step=torch.tensor(3), n_points=9), expected)
    with pytest.raises(TypeError, match="step must be an int or a one-element integer tensor"):
        fs.sigreg(X, step=torch.tensor(3.0))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: fs.sigreg(X, t_max=True), TypeError, "t_max must be a number, got bool"),
        (lambda: fs.sigreg(X, t_max="3"), TypeError, "t_max must be a number, got str '3'"),
        (lambda: fs.sigreg(X, clip_value="0.1"), TypeError, "clip_value must be a number, got str"),
        (lambda: fs.visreg(X, scale_weight="1"), TypeError, "scale_weight must be a number, got str"),
        (lambda: fs.rdmreg(torch.relu(X), mu="0"), TypeError, "mu must be a number, got str"),
        (lambda: fs.sample_rgg((3, 2), mu=float("nan")), ValueError, "mu must be a finite number, got nan"),
        (lambda: fs.sliced_wasserstein(X, quantile_clamp="x"), TypeError, "quantile_clamp must be a number"),
        (lambda: fs.sliced_wasserstein(X, quantile_clamp=0.6), ValueError, r"quantile_clamp must be a number in \(0"),
        (lambda: fs.sliced_wasserstein(X, quantile_clamp=-1), ValueError, r"quantile_clamp must be a number in \(0"),
        (lambda: fs.lejepa_loss(X[None], X[None], lambd="x"), TypeError, "lambd must be a number"),
        (lambda: fs.visreg_loss(X[None].expand(3, -1, -1), n_global=4), ValueError, "n_global must be <= the 3 views"),
        (lambda: fs.rectified_lpjepa_loss(X.relu(), X.relu(), lamb_reg=None), TypeError, "lamb_reg must be a number"),
    ],
)
def test_numeric_arguments_are_checked(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("op", ["sigreg", "sliced_wasserstein", "visreg", "rdmreg"])
def test_check_finite_covers_given_directions(op):
    bad = A.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="directions must be finite"):
        getattr(fs, op)(torch.relu(X), directions=bad, check_finite=True)
    assert torch.isnan(getattr(fs, op)(torch.relu(X), directions=bad, backend="eager"))  # propagated otherwise
