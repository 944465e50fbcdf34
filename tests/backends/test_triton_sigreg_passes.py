"""SIGReg's default triton path (``memory="auto"``): projections by torch.matmul and the Triton passes
over stored P (``kernels/ecf_passes.py``) against the eager reference, and the memory routing.

Without a GPU the passes run in Triton's interpreter on CPU tensors; with a CUDA device for real.
Inputs are fresh random each run (seed printed on failure).
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="the triton backend needs triton")

import fused_sigreg as fs  # noqa: E402
from fused_sigreg.backends import ecf_passes  # noqa: E402
from fused_sigreg.backends.triton import sigreg_passes  # noqa: E402
from fused_sigreg.slicing import shared_quadrature  # noqa: E402
from fused_sigreg.tools import bench, memory  # noqa: E402
from fused_sigreg.tools.problems import Shape, make_problem  # noqa: E402
from helpers import (  # noqa: E402
    FP32_TOL,
    ecf_stat_formula,
    rel_err,
    sigreg_value_and_grad,
)
from helpers import TRITON_DEVICE as DEVICE  # noqa: E402

pytestmark = pytest.mark.usefixtures("ieee_matmul")  # fp32 parity is judged with ieee matmuls
STAT_OP = sigreg_passes.ecf_stat_triton


def _inputs(rng, shape, K, scale=1.0):
    x = torch.randn(*shape, generator=rng) * scale
    a = torch.nn.functional.normalize(torch.randn(shape[-1], K, generator=rng), dim=0)
    return x.to(DEVICE), a.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_project_on_tensor_cores(rng, dtype):
    """16-bit x multiplies the directions rounded to its dtype in one GEMM with float32 accumulation and
    output (mm's out_dtype; in the interpreter ``mm_float32_out``), then the passes run in fp32: the value
    is eager's with the directions so rounded (what the fully fused kernel computes too) to fp32
    rounding, the gradient (cast back to the dtype) to the dtype's; the torch op and its stand-in agree."""
    x, a = _inputs(rng, (3, 40, 9), 11)
    x = x.to(dtype)
    value, grad = sigreg_value_and_grad(x, a, "triton")
    ref_value, ref_grad = sigreg_value_and_grad(x, a.to(dtype).float(), "eager")
    assert grad.dtype == dtype
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= 2.0**-7
    unrounded, _ = sigreg_value_and_grad(x, a, "eager")
    assert not torch.equal(value, unrounded)  # the rounding is there: eager's own product differs
    rows, rounded = x.reshape(-1, 9), a.to(dtype)
    assert rel_err(ecf_passes.mm_float32_out(rows, rounded), rows.float() @ rounded.float()) <= FP32_TOL
    if x.is_cuda:
        assert rel_err(ecf_passes.mm_float32_out(rows, rounded), torch.mm(rows, rounded, out_dtype=torch.float32)) <= (
            FP32_TOL
        )
    torch.library.opcheck(ecf_passes.mm_float32_out, (rows, rounded))


def test_16bit_projection_under_torch_compile(rng):
    """torch.compile(fullgraph=True) of the 16-bit path equals the eager call, the directions' rounding
    included (on CUDA Inductor lowers mm's out_dtype; elsewhere mm_float32_out is opaque to it)."""
    x, a = _inputs(rng, (2, 30, 8), 7)
    x = x.to(torch.bfloat16)
    value, grad = sigreg_value_and_grad(x, a, "triton")
    compiled = torch.compile(lambda v: fs.sigreg(v, directions=a, backend="triton"), fullgraph=True)
    xc = x.detach().requires_grad_()
    got = compiled(xc)
    got.backward()
    assert rel_err(got, value) <= FP32_TOL and rel_err(xc.grad, grad) <= 2.0**-7


def test_memory_min_is_the_fully_fused_kernel(rng):
    """memory="min" gives the same statistic and gradient without saving P; other backends refuse it."""
    x, a = _inputs(rng, (2, 50, 8), 16)
    value, grad = sigreg_value_and_grad(x, a, "triton")
    fused_value, fused_grad = sigreg_value_and_grad(x, a, "triton", memory="min")
    assert rel_err(value, fused_value) <= FP32_TOL and rel_err(grad, fused_grad) <= FP32_TOL
    problem = make_problem("sigreg", Shape(2, 50, 8, 16), device=DEVICE)
    assert bench.saved_tensor_bytes(problem, "triton")["saved_extra_bytes"] == memory.sigreg_saved_extra_bytes(
        "P", 2, 50, 16, 17
    )
    with pytest.raises(ValueError, match="memory must be 'auto' or 'min', got 'max'"):
        fs.sigreg(x, directions=a, memory="max")
    with pytest.raises(fs.BackendUnavailableError, match=r"memory='min'.*backend 'cpu'.*ecf_means_min"):
        fs.sigreg(x.cpu(), directions=a.cpu(), backend="cpu", memory="min")
    assert fs.SIGReg(8, memory="min").memory == "min"


def test_routes_to_the_fused_kernel_when_p_would_not_fit(rng, monkeypatch):
    x, a = _inputs(rng, (40, 6), 9)
    problem = make_problem("sigreg", Shape(1, 40, 6, 9), device=DEVICE)
    monkeypatch.setattr(sigreg_passes, "p_fits", lambda x, directions: False)
    assert bench.saved_tensor_bytes(problem, "triton")["saved_extra_bytes"] == memory.sigreg_saved_extra_bytes(
        "min", 1, 40, 9, 17
    )
    value, grad = sigreg_value_and_grad(x, a, "triton")
    ref_value, ref_grad = sigreg_value_and_grad(x, a, "eager")
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= FP32_TOL


def test_p_fits_rule(monkeypatch):
    """P is kept while it takes at most an eighth of the GPU's total memory, whatever is free: the same
    call takes the same path every time, and asks the allocator nothing."""
    x = torch.empty(2, 1000, 8)
    a = torch.empty(8, 250)  # P: 2 * 1000 * 250 * 4 = 2 MB
    assert sigreg_passes.p_fits(x, a)  # off CUDA: always
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    props = type("Properties", (), {"total_memory": 16_000_000})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    for query in ("mem_get_info", "memory_reserved", "memory_allocated", "memory_stats"):
        monkeypatch.setattr(torch.cuda, query, lambda *a, q=query, **k: pytest.fail(f"p_fits asked torch.cuda.{q}"))
    assert sigreg_passes.p_fits(x, a)  # 2 MB <= 16 MB / 8
    props.total_memory = 15_999_992
    assert not sigreg_passes.p_fits(x, a)


def test_partial_sums_do_not_grow_with_n():
    """The forward's fp64 partial sums are bounded by SMs x BLOCK_K x T, whatever N."""
    sizes = {}
    for n in (2**10, 2**14, 2**18, 2**22, 2**26):
        shape = sigreg_passes.partial_shape(1, n, 4096, 17, torch.device("cpu"))
        sizes[n] = shape[1] * shape[2] * shape[3] * shape[4] * 8
    assert sizes[2**18] == sizes[2**22] == sizes[2**26]
    assert sizes[2**26] <= 132 * 4 * 2 * 17 * 4096 * 8  # PROGRAMS_PER_SM programs per SM at most
    assert sigreg_passes.partial_shape(1, 2, 3, 17, torch.device("cpu"))[1] == 1


def test_no_row_split_is_empty():
    """The pass writes each split's partial sums from the split's first rows (the buffer is not zeroed), so
    every split must own rows: at N = 140000, V = 1, K <= 128, 528 splits of 266 rows would leave the last
    one empty; fewer splits of the same height are taken instead."""
    for N in list(range(1, 3000, 7)) + [65_281, 127_745, 140_000, 200_000, 278_255, 2**20 + 1]:
        for V, K in ((1, 100), (2, 1024), (10, 4096)):
            splits = sigreg_passes.partial_shape(V, N, K, 17, torch.device("cpu"))[1]
            assert (splits - 1) * triton.cdiv(N, splits) < N, (N, V, K, splits)


def test_partial_sums_need_no_zeroed_buffer(rng, monkeypatch):
    """Every slot of the partial sums is written: a buffer handed over full of NaN gives the same sums."""
    proj = torch.randn(2, 600, 5, generator=rng).to(DEVICE)
    want = sigreg_passes.ecf_sums_triton(proj, 0.1875, 17)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    assert torch.equal(sigreg_passes.ecf_sums_triton(proj, 0.1875, 17), want)


def test_memory_matches_the_accounting():
    """Saved bytes equal the analytic count exactly; peak extra memory stays within the model."""
    for V, N, D, K, T in [(1, 50, 8, 16, 17), (3, 37, 5, 7, 9), (2, 300, 12, 8, 17)]:
        problem = make_problem("sigreg", Shape(V, N, D, K, T), device=DEVICE)
        measured = bench.saved_tensor_bytes(problem, "triton")["saved_extra_bytes"]
        assert measured == memory.sigreg_saved_extra_bytes("P", V, N, K, T)
        shape = sigreg_passes.partial_shape(V, N, K, T, problem.x.device)
        partial = shape[0] * shape[1] * shape[2] * shape[3] * shape[4] * 8
        model = memory.sigreg_peak_extra_bytes_model("P", V, N, D, K, T, partial_bytes=partial)
        assert bench.peak_extra_bytes(problem, "triton") <= model


def test_second_backward_fails_loudly(rng):
    """dP overwrites the saved P, so reusing the graph must raise rather than read dP as P."""
    x, a = _inputs(rng, (20, 4), 6)
    loss = fs.sigreg(x.requires_grad_(), directions=a, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="triton backend's SIGReg backward.*retain_graph=True"):
        loss.backward()


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


def _dp_formula(proj, coef, delta, scale=None):
    """float64 dP = g (sum_j coef[:, 0, j] cos(j delta p) + coef[:, 1, j] sin(j delta p))."""
    p, c = proj.double().cpu(), coef.double().cpu()
    j = torch.arange(c.shape[2], dtype=torch.float64)
    angles = p.unsqueeze(-2) * (j * delta)[:, None]  # (V, N, T, K)
    dp = (angles.cos() * c[:, 0].unsqueeze(1) + angles.sin() * c[:, 1].unsqueeze(1)).sum(-2)
    return dp if scale is None else dp * scale.double().cpu()[:, None, :]


@pytest.mark.parametrize("scale", [None, "contiguous", "expanded", "transposed"])
def test_ecf_grad_scales_each_slice_by_any_strides(rng, scale):
    """The dP pass against the float64 formula, with the per-slice scale SIGReg's backward hands it: none,
    contiguous, a mean's expanded scalar gradient (strides 0, alpha = 1 / (V K)) or a transposed one; in
    place equals out of place, and both ops pass opcheck. (2, 37, 70): a partial row tile and three column
    tiles."""
    V, N, K, T, delta = 2, 37, 70, 17, 3.0 / 16
    proj = (torch.randn(V, N, K, generator=rng) * 1.5).to(DEVICE)
    coef = torch.randn(V, 2, T, K, generator=rng).to(DEVICE)
    g = {
        None: None,
        "contiguous": torch.randn(V, K, generator=rng),
        "expanded": torch.randn((), generator=rng).expand(V, K),
        "transposed": torch.randn(K, V, generator=rng).t(),
    }[scale]
    g = None if g is None else g.to(DEVICE)
    alpha = 1.0 / (V * K) if scale == "expanded" else 1.0  # a mean's gradient: the scalar, expanded, and 1 / (V K)
    dp = sigreg_passes.ecf_grad_triton(proj, coef, delta, g, alpha)
    assert rel_err(dp, _dp_formula(proj, coef, delta, None if g is None else g * alpha)) <= 1e-5
    inplace = proj.clone()
    sigreg_passes.ecf_grad_triton_inplace(inplace, coef, delta, g, alpha)
    assert torch.equal(inplace, dp)
    torch.library.opcheck(sigreg_passes.ecf_grad_triton, (proj, coef, delta, g, alpha))
    torch.library.opcheck(sigreg_passes.ecf_grad_triton_inplace, (proj.clone(), coef, delta, g, alpha))
    with pytest.raises(ValueError, match="scale must be float32"):
        sigreg_passes.ecf_grad_triton(proj, coef, delta, torch.ones(V, K + 1, device=DEVICE))
