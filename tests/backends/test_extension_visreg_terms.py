"""VISReg's centre and scale terms on the compiled CPU extension (csrc/visreg_terms_cpu.cpp) against the
reference's ``visreg_terms``: odd sizes, N = 1 (a zero norm), several column blocks; schema and bad input.
The conformance suite runs VISReg whole (V = 3, 16-bit, NaN, opcheck, torch.compile, golden cases)."""

import pytest
import torch

from fused_sigreg.backends.extension.sort_match import _TERMS
from helpers import check_visreg_terms

OPS = _TERMS["cpu"]


@pytest.mark.parametrize("V,N,D", [(1, 1, 1), (2, 37, 13), (3, 70, 40), (1, 9, 300)])
def test_matches_the_reference(rng, V, N, D):
    """300 columns of one view: blocks of 80 at 2 threads (the width rule's cache lines), a partial last one."""
    check_visreg_terms(*OPS, rng, "cpu", V, N, D)


@pytest.mark.parametrize("threads", [1, 3])
def test_center_norm_is_torchs_at_any_thread_count(rng, threads):
    """The centring reduces each column in torch's order for norm(dim=-2) in one thread (blocks of columns per
    task), so its bits do not depend on the thread count or the block widths it picks: every width from 16 to
    256 columns and N = 1, 2, many."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for V, N, D in [(1, 1, 2), (3, 2, 17), (1, 500, 700), (10, 64, 33), (2, 300, 1030)]:
            z = torch.randn(V, N, D, generator=rng) * 3 + 1
            mu = z.mean(dim=-2, keepdim=True)
            centered, norm = torch.ops.fused_sigreg.center_norm(z, mu)
            assert torch.equal(centered, z - mu) and torch.equal(norm, (z - mu).norm(dim=-2)), (V, N, D)
    finally:
        torch.set_num_threads(saved)


def test_one_column_takes_torchs_centring(rng, monkeypatch):
    """torch reduces a lone column's norm in another order (its rows are contiguous): D = 1 goes to torch."""
    calls = []
    monkeypatch.setattr(torch.ops.fused_sigreg, "center_norm", lambda *a: calls.append(a) or None, raising=False)
    z = torch.randn(2, 50, 1, generator=rng)
    centered, norm = OPS[2](z, z.mean(dim=-2, keepdim=True))
    assert calls == [] and torch.equal(norm, (z - z.mean(dim=-2, keepdim=True)).norm(dim=-2))


def test_opcheck(rng):
    z = torch.randn(2, 9, 20, generator=rng)
    mu = z.mean(dim=-2, keepdim=True)
    centered, norm = z - mu, (z - mu).norm(dim=-2)
    torch.library.opcheck(OPS[0], (centered, mu, norm, 1e-6, 1.0, 1.0))
    _, _, sigma = OPS[0](centered, mu, norm, 1e-6, 1.0, 1.0)
    args = (torch.randn_like(z), centered, mu, sigma, norm, torch.tensor(1.0), 0.5, 1.0, 1.0)
    torch.library.opcheck(OPS[1], args)
    torch.library.opcheck(torch.ops.fused_sigreg.center_norm, (z, mu))


def test_the_ops_reject_what_they_cannot_compute(rng):
    z = torch.randn(2, 5, 3, generator=rng)
    mu, norm = z.mean(dim=-2), z.norm(dim=-2)
    with pytest.raises(RuntimeError, match="centered must be a"):
        OPS[0](z.double(), mu, norm, 1e-6, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="norm must be a"):
        OPS[0](z, mu, norm[:1], 1e-6, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="grad_out must be"):
        OPS[1](z, z, mu, norm, norm, torch.ones(2), 1.0, 1.0, 1.0)
