"""VISReg's centre and scale terms on the compiled CPU extension (csrc/visreg_terms_cpu.cpp) against the
reference's ``visreg_terms``: odd sizes, N = 1 (a zero norm), several column blocks; schema and bad input.
The conformance suite runs VISReg whole (V = 3, 16-bit, NaN, opcheck, torch.compile, golden cases)."""

import pytest
import torch

from helpers import check_visreg_terms

OPS = (torch.ops.fused_sigreg.visreg_terms, torch.ops.fused_sigreg.visreg_terms_backward)


@pytest.mark.parametrize("V,N,D", [(1, 1, 1), (2, 37, 13), (3, 70, 40)])
def test_matches_the_reference(rng, V, N, D):
    check_visreg_terms(*OPS, rng, "cpu", V, N, D)


def test_opcheck(rng):
    z = torch.randn(2, 9, 20, generator=rng)
    mu = z.mean(dim=-2, keepdim=True)
    centered, norm = z - mu, (z - mu).norm(dim=-2)
    torch.library.opcheck(OPS[0], (centered, mu, norm, 1e-6, 1.0, 1.0))
    _, _, sigma = OPS[0](centered, mu, norm, 1e-6, 1.0, 1.0)
    args = (torch.randn_like(z), centered, mu, sigma, norm, torch.tensor(1.0), 0.5, 1.0, 1.0)
    torch.library.opcheck(OPS[1], args)


def test_the_ops_reject_what_they_cannot_compute(rng):
    z = torch.randn(2, 5, 3, generator=rng)
    mu, norm = z.mean(dim=-2), z.norm(dim=-2)
    with pytest.raises(RuntimeError, match="centered must be a"):
        OPS[0](z.double(), mu, norm, 1e-6, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="norm must be a"):
        OPS[0](z, mu, norm[:1], 1e-6, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="grad_out must be"):
        OPS[1](z, z, mu, norm, norm, torch.ones(2), 1.0, 1.0, 1.0)
