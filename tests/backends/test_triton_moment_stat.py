"""lejepa's moment-family statistics on Triton (kernels/moment_stat.py) against the float64 eager references.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (conftest sets ``TRITON_INTERPRET=1``):
sizes stay small. On a GPU the same tests run on CUDA tensors. Inputs are fresh random each run.
"""

import pytest
import torch

pytest.importorskip("triton", reason="the triton backend needs triton")

from fused_sigreg.backends.moment_stat import IDS as OP_IDS
from fused_sigreg.backends.triton.moment_stat import moment_stat_backward_triton, moment_stat_triton
from helpers import TRITON_DEVICE as DEVICE
from moment_cases import CASES, IDS, check_against_float64

pytestmark = pytest.mark.usefixtures("triton_device")


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_matches_the_float64_reference(rng, name, opts):
    """Two leading dims; 70 rows (two full chunks of 32 and a partial one), 37 columns (two blocks of 32)."""
    x = torch.randn(2, 1, 70, 37, generator=rng) * 1.3 + 0.4
    check_against_float64(name, opts, x, rng, "triton", DEVICE)


def test_a_mean_far_from_the_spread_keeps_fp32_precision(rng):
    x = 300.0 + 1e-2 * torch.randn(40, 5, generator=rng)
    check_against_float64("extended_jarque_bera", {}, x, rng, "triton", DEVICE)


def test_op_checks_and_opcheck(rng):
    proj = torch.randn(2, 9, 5, generator=rng).to(DEVICE)
    torch.library.opcheck(moment_stat_triton, (proj, OP_IDS["extended_jarque_bera"], 4, True))
    _, coef, centre = moment_stat_triton(proj, OP_IDS["moments"], 3, True)
    grad_out = torch.randn(2, 5, generator=rng).to(DEVICE)
    torch.library.opcheck(moment_stat_backward_triton, (proj, coef, centre, grad_out))
    with pytest.raises(ValueError, match="coef must be float64"):
        moment_stat_backward_triton(proj, coef.float(), centre, grad_out)
    with pytest.raises(ValueError, match="statistic must be an id"):
        moment_stat_triton(proj, 7, 4, True)
    with pytest.raises(ValueError, match=r"k_max must be in \[1, 16\]"):
        moment_stat_triton(proj, OP_IDS["moments"], 17, True)
    with pytest.raises(ValueError, match="proj must be"):
        moment_stat_triton(proj.double(), 1, 4, True)
