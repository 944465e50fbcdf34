"""SIGReg's ECF stage on the compiled CPU extension (csrc/sigreg_cpu.cpp) against eager."""

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg.slicing import shared_quadrature
from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import ecf_stat_formula, rel_err, sigreg_value_and_grad

DEVICE = "cpu"
STAT_OP = torch.ops.fused_sigreg.ecf_stat


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_are_upcast(rng, dtype):
    x = torch.randn(3, 40, 9, generator=rng).to(dtype)
    a = torch.nn.functional.normalize(torch.randn(9, 11, generator=rng), dim=0)
    value, grad = sigreg_value_and_grad(x, a, "cpu")
    ref_value, ref_grad = sigreg_value_and_grad(x, a, "eager")
    assert grad.dtype == dtype
    assert rel_err(value, ref_value) <= 1e-5 and rel_err(grad, ref_grad) <= 2.0**-7


def test_auto_uses_it_and_nan_propagates(rng):
    x = torch.randn(30, 4, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(4, 6, generator=rng), dim=0)
    assert torch.equal(fs.sigreg(x, directions=a), fs.sigreg(x, directions=a, backend="cpu"))
    x[3, 1] = float("nan")
    assert torch.isnan(fs.sigreg(x, directions=a, backend="cpu"))
    x[3, 1] = float("inf")
    assert torch.isnan(fs.sigreg(x, directions=a, backend="cpu"))


def test_opcheck(rng):
    proj = torch.randn(2, 33, 7, generator=rng)
    torch.library.opcheck(torch.ops.fused_sigreg.ecf_sums, (proj, 0.1875, 17))
    coef = torch.randn(2, 2, 17, 7, generator=rng)
    torch.library.opcheck(torch.ops.fused_sigreg.ecf_grad, (proj, coef, 0.1875))
    torch.library.opcheck(torch.ops.fused_sigreg.ecf_grad_, (proj.clone(), coef, 0.1875))
    quad = shared_quadrature(3.0, 17, "cpu")
    torch.library.opcheck(torch.ops.fused_sigreg.ecf_stat, (proj, 0.1875, quad.t, quad.phi, quad.weights))
    inplace = proj.clone()
    torch.ops.fused_sigreg.ecf_grad_(inplace, coef, 0.1875)
    assert torch.equal(inplace, torch.ops.fused_sigreg.ecf_grad(proj, coef, 0.1875))


@pytest.mark.parametrize("V,N,K", [(1, 1, 1), (2, 37, 13), (1, 260, 129)])
def test_ecf_stat_is_the_statistic_and_its_derivative(rng, V, N, K):
    """The op's statistic and derivative coefficients against the float64 formula (odd sizes, N = 1, several
    column tiles / row splits); a NaN reaches its own slice's statistic and coefficients only."""
    proj = (torch.randn(V, N, K, generator=rng) * 1.5).to(DEVICE)
    quad = shared_quadrature(3.0, 17, DEVICE)
    stat, base = STAT_OP(proj, 3.0 / 16, quad.t, quad.phi, quad.weights)
    want_stat, want_base = ecf_stat_formula(proj.cpu(), quad.t.cpu(), quad.phi.cpu(), quad.weights.cpu())
    assert stat.shape == (V, K) and base.shape == (V, 2, 17, K)
    assert rel_err(stat, want_stat) <= 1e-5 and rel_err(base, want_base) <= 1e-5
    proj[-1, N // 2, K - 1] = float("nan")
    stat, base = STAT_OP(proj, 3.0 / 16, quad.t, quad.phi, quad.weights)
    assert stat[-1, -1].isnan() and base[-1, :, 1:, -1].isnan().all()
    assert stat[:, :-1].isfinite().all() and stat[:-1].isfinite().all() and base[..., :-1].isfinite().all()


def test_memory_within_budget():
    """Saved: P (N K floats, reused for dP in backward) and the statistic's derivative coefficients (2 K T
    floats) beyond the inputs; peak extra of fwd + bwd: P/dP and dX (N K + N D floats) plus O(V K T),
    i.e. inputs + 2 N K 4 bytes when D <= K."""
    shape = Shape(1, 1024, 64, 128, 17)
    problem = make_problem("sigreg", shape)
    saved = bench.saved_tensor_bytes(problem, "cpu")["saved_extra_bytes"]
    assert saved == 4 * shape.N * shape.K + 4 * 2 * shape.K * shape.T
    peak = bench.peak_extra_bytes(problem, "cpu")
    assert peak <= 4 * shape.N * (shape.K + max(shape.K, shape.D)) + 16 * 4 * shape.K * shape.T


def test_second_backward_fails_loudly(rng):
    """dP overwrites the saved P, so reusing the graph must raise rather than read dP as P."""
    x = torch.randn(20, 4, generator=rng).requires_grad_()
    a = torch.nn.functional.normalize(torch.randn(4, 6, generator=rng), dim=0)
    loss = fs.sigreg(x, directions=a, backend="cpu")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once.*retain_graph=True"):
        loss.backward()


def test_angles_beyond_the_polynomial_range_use_libm(rng):
    """Lanes with |angle| > 2^13 (or NaN) take libm's sincosf while their neighbours keep the polynomial:
    the first knot's cos / sin is then the fp32 cos / sin of the fp32 angle, lane by lane."""
    delta = 0.25
    p = torch.randn(1, 7, 21, generator=rng) * 3.0
    p[0, :, ::3] = torch.tensor([4.0e4, -9.0e5, 3.3e4, 5.0e6, -6.1e4, 8.8e4, 1.0e7]).unsqueeze(-1)  # 7 x 7 lanes
    angle = delta * p
    sums = torch.ops.fused_sigreg.ecf_sums(p, delta, 2)
    assert torch.allclose(sums[0, 0, 1], torch.cos(angle[0]).sum(0), atol=1e-5, rtol=1e-6)
    assert torch.allclose(sums[0, 1, 1], torch.sin(angle[0]).sum(0), atol=1e-5, rtol=1e-6)
    coef = torch.rand(1, 2, 2, 21, generator=rng)
    grad = torch.ops.fused_sigreg.ecf_grad(p, coef, delta)
    want = coef[:, 0, 0] + coef[:, 0, 1] * torch.cos(angle) + coef[:, 1, 1] * torch.sin(angle)
    assert torch.allclose(grad, want, atol=1e-6, rtol=1e-6)
    p[0, 2, 4] = float("nan")
    assert torch.isnan(torch.ops.fused_sigreg.ecf_grad(p, coef, delta)[0, 2, 4])
    assert torch.isnan(torch.ops.fused_sigreg.ecf_sums(p, delta, 2)[0, :, 1, 4]).all()
