"""lejepa's NLL on Triton (kernels/order_nll.py) against the float64 eager reference.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (conftest sets ``TRITON_INTERPRET=1``):
sizes stay small. On a GPU the same tests run on CUDA tensors. Inputs are fresh random each run.
"""

import pytest
import torch

pytest.importorskip("triton", reason="the triton backend needs triton")

from fused_sigreg import dispatch, univariate
from fused_sigreg.backends.order_nll import rank_constants, rank_cutoffs
from fused_sigreg.backends.triton.configs import MAX_STAT_N
from fused_sigreg.backends.triton.order_nll import sort_nll_triton
from fused_sigreg.ops import univariate as fused
from fused_sigreg.tools.check import StableSort
from helpers import TRITON_DEVICE as DEVICE
from helpers import fp32_budget, rel_err, value_and_grad

pytestmark = [
    pytest.mark.usefixtures("triton_device"),
    # the interpreter evaluates every branch of log Phi: the tail's division where the CDF underflows
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def _check(x, rng, alpha=0.5):
    """fp32 Triton vs the float64 reference (stable sort): NaN exactly where it has NaN, elsewhere the cpu
    backend's budget (fp32_budget)."""
    x = x.to(DEVICE)
    weight = torch.randn(x.shape, generator=rng, dtype=torch.float64).to(DEVICE)

    def reference(v):
        with StableSort():
            return univariate.nll(v, alpha).nan_to_num()

    raw = fused.nll(x, alpha, backend="triton")
    value, grad = value_and_grad(lambda v: fused.nll(v, alpha, backend="triton").nan_to_num(), x, weight.float())
    ref64, grad64 = value_and_grad(reference, x.double(), weight)
    ref32, grad32 = value_and_grad(reference, x, weight.float())
    with StableSort():
        assert torch.equal(raw.isnan(), univariate.nll(x.double(), alpha).isnan())
    assert raw.dtype == torch.float32 and raw.shape == x.shape
    assert rel_err(value, ref64) <= fp32_budget(ref32, ref64)
    assert rel_err(grad, grad64) <= fp32_budget(grad32, grad64)


@pytest.mark.parametrize("alpha", [0.5, 0.1])
def test_matches_the_float64_reference(rng, alpha):
    """(37, 9): a 64-wide sort over three column tiles, the last partial; two views with tails past +-3."""
    _check(torch.randn(37, 9, generator=rng) * 1.5 - 0.2, rng, alpha)
    _check(torch.randn(2, 20, 3, generator=rng) * 4.0, rng, alpha)


def test_ties_branch_switch_near_collapse_and_nan(rng):
    """Tied samples (ranks by row order), samples exactly at +-3 (CLAMP_CLOSED decides the slope), a column
    collapsed within 1e-6, and a NaN, which sorts last as in torch.sort."""
    ties = torch.randint(-6, 7, (20, 2), generator=rng).float() * 0.5
    ties[:2] = torch.tensor([3.0, -3.0]).unsqueeze(-1)
    collapsed = 0.25 + 1e-6 * torch.randn(20, 1, generator=rng)
    x = torch.cat([ties, collapsed, torch.randn(20, 1, generator=rng)], dim=1)
    x[5, 3] = float("nan")
    _check(x, rng)


def test_op_checks_and_opcheck(rng):
    proj = torch.randn(2, 11, 3, generator=rng).to(DEVICE)
    constant = rank_constants(11, DEVICE)
    # the masked variant (the conformance suite opchecks the op unmasked): intervals no sample falls in,
    # since opcheck compares outputs without equal_nan
    far = torch.stack([torch.full((11,), -20.0), torch.full((11,), -19.0)]).to(DEVICE)
    torch.library.opcheck(sort_nll_triton, (proj, constant, far, True))
    with pytest.raises(ValueError, match=r"constant must be float32 \(11,\)"):
        sort_nll_triton(proj, constant[:4], None, True)
    with pytest.raises(ValueError, match=r"cutoffs must be float32 \(2, 11\)"):
        sort_nll_triton(proj, constant, rank_cutoffs(5, 0.1, DEVICE), True)


def test_wider_sorts_are_not_its_own():
    x = torch.empty(MAX_STAT_N + 1, 2, device=DEVICE)
    ok, why = dispatch.REGISTRY.verdict(dispatch.REGISTRY.backends["triton"], "nll", (x,))
    assert not ok and f"N <= {MAX_STAT_N}" in why
