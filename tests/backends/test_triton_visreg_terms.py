"""VISReg's centre and scale terms on Triton (kernels/visreg_terms.py) against the reference's
``visreg_terms``. Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1``); on a GPU the same tests run on CUDA tensors, where the forward takes torch's CUDA
division by sqrt(N) (a multiply by the float32 reciprocal) and must still give the reference's bits."""

import pytest
import torch

pytest.importorskip("triton", reason="the triton backend needs triton")

from fused_sigreg.backends.triton.visreg_terms import OPS, _root_n
from helpers import TRITON_DEVICE as DEVICE
from helpers import check_visreg_terms

pytestmark = pytest.mark.usefixtures("triton_device")


@pytest.mark.parametrize("V,N,D", [(1, 1, 1), (2, 37, 13), (3, 70, 40)])
def test_matches_the_reference(rng, V, N, D):
    """70 rows: two full chunks of 32 and a partial one; 40 columns: a full block of 32 and a partial one."""
    check_visreg_terms(*OPS, rng, DEVICE, V, N, D)


def test_the_cuda_division_is_a_multiply_by_the_float32_reciprocal():
    """What RECIPROCAL computes, and what torch's CUDA ``tensor / python_float`` does (a CPU scalar divisor
    becomes a multiply by its float32 reciprocal); on a GPU the test above checks the bits themselves."""
    for n in (2, 3, 37, 100):
        root = torch.tensor(n**0.5, dtype=torch.float32)
        assert _root_n(n, True) == (torch.tensor(1.0) / root).item() and _root_n(n, False) == root.item()


def test_op_checks_and_opcheck(rng):
    z = torch.randn(2, 9, 20, generator=rng).to(DEVICE)
    mu = z.mean(dim=-2, keepdim=True)
    centered, norm = z - mu, (z - mu).norm(dim=-2)
    torch.library.opcheck(OPS[0], (centered, mu, norm, 1e-6, 1.0, 1.0))
    _, _, sigma = OPS[0](centered, mu, norm, 1e-6, 1.0, 1.0)
    grad_out = torch.tensor(1.0, device=DEVICE)
    torch.library.opcheck(OPS[1], (torch.randn_like(z), centered, mu, sigma, norm, grad_out, 0.5, 1.0, 1.0))
    with pytest.raises(ValueError, match="centered must be"):
        OPS[0](centered.double(), mu, norm, 1e-6, 1.0, 1.0)
    with pytest.raises(ValueError, match="grad_out must be one float32"):
        OPS[1](z, centered, mu, sigma, norm, torch.ones(2, device=DEVICE), 1.0, 1.0, 1.0)
