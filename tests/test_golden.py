"""The eager reference, through the public API, against the official implementations' numbers."""

import pytest
import torch

import fused_sigreg as fs
from helpers import rel_err

TOL = 1e-5
N_SIGREG_CASES = 7


@pytest.mark.parametrize("i", range(N_SIGREG_CASES))
def test_sigreg_lejepa_directions_equal_lejepa_draw(golden, i):
    case = golden["sigreg_lejepa"][i]
    drawn = fs.lejepa_directions(case["x"].shape[-1], case["K"], case["step"])
    assert torch.equal(drawn, case["directions"])


@pytest.mark.parametrize("i", range(N_SIGREG_CASES))
def test_sigreg_lejepa(golden, i):
    case = golden["sigreg_lejepa"][i]
    x = case["x"].clone().requires_grad_()
    value = fs.sigreg(
        x,
        num_slices=case["K"],
        t_max=case["t_max"],
        n_points=case["n_points"],
        step=case["step"],
        reduction=case["reduction"],
    )
    value.sum().backward()
    assert value.shape == case["value"].shape
    assert rel_err(value, case["value"]) <= TOL
    assert rel_err(x.grad, case["grad"]) <= TOL


@pytest.mark.parametrize("i", range(N_SIGREG_CASES))
def test_sigreg_module_matches_golden_step(golden, i):
    case = golden["sigreg_lejepa"][i]
    module = fs.SIGReg(
        num_slices=case["K"], t_max=case["t_max"], n_points=case["n_points"], reduction=case["reduction"]
    )
    module.global_step.fill_(case["step"])
    x = case["x"].clone().requires_grad_()
    value = module(x)
    value.sum().backward()
    assert rel_err(value, case["value"]) <= TOL and rel_err(x.grad, case["grad"]) <= TOL
    assert module.global_step.item() == case["step"] + 1


VISREG_OPS = {  # keyed as the golden file names its cases
    "visreg": lambda z, a: fs.visreg(z, directions=a),
    "swd": lambda z, a: fs.sliced_wasserstein(z, directions=a, quantile_clamp=1e-4),
    "sigreg_visrepo": lambda z, a: fs.sigreg(z, directions=a),
}


@pytest.mark.parametrize("key", sorted(VISREG_OPS))
@pytest.mark.parametrize("i", range(4))
def test_visreg_repository(golden, key, i):
    case = golden["visreg_repo"][i]
    ref = case[key]
    z = case["z"].clone().requires_grad_()
    value = VISREG_OPS[key](z, ref["directions"])
    value.backward()
    assert rel_err(value, ref["value"]) <= TOL
    assert rel_err(z.grad, ref["grad"]) <= TOL


@pytest.mark.parametrize("i", range(3))
def test_rdmreg(golden, i):
    case = golden["rdmreg"][i]
    z = case["z"].clone().requires_grad_()
    value = fs.rdmreg(z, directions=case["projections"].t(), target_samples=case["target_samples"])
    value.backward()
    assert rel_err(value, case["value"]) <= TOL
    assert rel_err(z.grad, case["grad"]) <= TOL


def _parse(key):
    parts = key.split("_")
    p = float(parts[2][1:])
    mu = float(parts[3][2:]) if len(parts) > 3 else None
    return p, mu


def test_rgg_constants(golden):
    consts = golden["rgg_constants"]
    assert len(consts) == 17
    for key, expected in consts.items():
        p, mu = _parse(key)
        if key.startswith("sigma_gn"):
            got = fs.gn_unit_variance_sigma(p)
        elif key.startswith("sigma_rgn"):
            got = fs.rgn_unit_variance_sigma(p, mu)
        else:
            got = fs.rgg.rgn_moments(p, mu, fs.rgn_unit_variance_sigma(p, mu)).mean
        # The official values come from a numerical root finder good to ~1e-10.
        assert got == pytest.approx(expected, rel=1e-8), key
