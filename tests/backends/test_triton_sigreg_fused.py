"""Fully fused Triton SIGReg (``memory="min"``) against the eager reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1`` before triton is imported); with a CUDA device they run for real.
Inputs are fresh random each run (seed printed on failure).
"""

import dataclasses

import pytest
import torch

triton = pytest.importorskip("triton", reason="the triton backend needs triton")
import triton.language as tl  # noqa: E402

import fused_sigreg as fs
from fused_sigreg.kernels.common import round_to_tf32
from fused_sigreg.tools import bench, memory, numerics
from fused_sigreg.tools.check import check_problem
from fused_sigreg.tools.problems import Shape, make_problem
from helpers import FP32_TOL, GPU, rel_err, sigreg_value_and_grad
from helpers import TRITON_DEVICE as DEVICE


@pytest.fixture(autouse=True)
def fully_fused(registry):
    """Every test here runs the fully fused kernel (``memory="min"``), also where it reaches the triton
    backend through the tools; the default passes over stored P are tested in test_triton_sigreg_passes.py."""
    from fused_sigreg.backends.triton import sigreg_passes

    triton_backend = registry.backends["triton"]
    ops = dict(
        triton_backend.ops,
        ecf_means=triton_backend.ops["ecf_means_min"],
        sigreg_stats=sigreg_passes.sigreg_stats_fused,
    )
    registry.register(dataclasses.replace(triton_backend, ops=ops))


# fp32 parity is judged with ieee dots (the tf32 tests set the setting themselves)
pytestmark = pytest.mark.usefixtures("triton_device", "ieee_matmul")


def _inputs(rng, shape, K, dtype=torch.float32, scale=1.0):
    x = (torch.randn(*shape, generator=rng) * scale).to(DEVICE, dtype)
    a = torch.nn.functional.normalize(torch.randn(shape[-1], K, generator=rng), dim=0).to(DEVICE)
    return x, a


def test_reductions_and_views(rng):
    x, a = _inputs(rng, (3, 40, 9), 11)
    per_slice = fs.sigreg(x, directions=a, reduction=None, backend="triton")
    assert per_slice.shape == (3, 11)
    assert torch.allclose(fs.sigreg(x, directions=a, backend="triton"), per_slice.mean())
    assert torch.allclose(fs.sigreg(x, directions=a, reduction="sum", backend="triton"), per_slice.sum())
    for v in range(3):  # views share directions and are independent otherwise
        assert rel_err(fs.sigreg(x[v], directions=a, reduction=None, backend="triton"), per_slice[v]) <= FP32_TOL


def test_auto_selection_and_refusals(rng):
    x, a = _inputs(rng, (20, 6), 5)
    assert fs.available_backends()["triton"] == (True, "")
    from fused_sigreg import dispatch

    chosen, _ = dispatch.select("sigreg_stats", (x, a))
    # auto prefers the fused kernel on CUDA tensors, but never routes work through the interpreter
    assert chosen == "triton" if GPU else chosen != "triton"
    # float64 and directions that require grad are served by eager under auto, refused when forced
    assert fs.sigreg(x.double(), directions=a.double()).dtype == torch.float64
    with pytest.raises(fs.BackendUnavailableError, match="float32/bfloat16/float16"):
        fs.sigreg(x.double(), directions=a.double(), backend="triton")
    a_grad = a.clone().requires_grad_()
    assert torch.allclose(fs.sigreg(x, directions=a_grad), fs.sigreg(x, directions=a, backend="eager"))
    with pytest.raises(fs.BackendUnavailableError, match="directions require grad"):
        fs.sigreg(x, directions=a_grad, backend="triton")


def test_tf32_path_rounds_operands(rng):
    """allow_tf32: the kernels round x and A to nearest tf32 before the dot; under the interpreter the
    dot is then exact, so the value equals eager on rounded operands."""
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the fixture
    x, a = _inputs(rng, (64, 40), 24)
    value, grad = sigreg_value_and_grad(x, a, "triton")
    ref_value, ref_grad = sigreg_value_and_grad(x, a, "eager")
    assert rel_err(value, ref_value) <= 1e-3 and rel_err(grad, ref_grad) <= 1e-2
    if not GPU:
        rounded, _ = sigreg_value_and_grad(numerics.round_to_tf32(x), numerics.round_to_tf32(a), "eager")
        assert rel_err(value, rounded) <= FP32_TOL


def test_memory_matches_the_accounting():
    """Saved bytes equal the analytic count exactly; peak extra memory stays within the model."""
    for V, N, D, K, T in [(1, 50, 8, 16, 17), (3, 37, 5, 7, 9), (2, 300, 12, 8, 17)]:
        problem = make_problem("sigreg", Shape(V, N, D, K, T), device=DEVICE)
        for backend in ("triton", "eager"):
            measured = bench.saved_tensor_bytes(problem, backend)["saved_extra_bytes"]
            variant = {"triton": "min", "eager": "eager"}[backend]
            assert measured == memory.sigreg_saved_extra_bytes(variant, V, N, K, T), backend
        partial = sigreg_triton_partial_bytes(V, K, T)
        fused_peak = bench.peak_extra_bytes(problem, "triton")
        assert fused_peak <= memory.sigreg_peak_extra_bytes_model("min", V, N, D, K, T, partial_bytes=partial)
        eager_peak = bench.peak_extra_bytes(problem, "eager")
        model = memory.sigreg_peak_extra_bytes_model("eager", V, N, D, K, T)
        assert model <= eager_peak <= 1.2 * model + 64 * 1024


def sigreg_triton_partial_bytes(V, K, T):
    """The forward's int64 fixed-point sums (V, 2, T, K) and int32 non-finite flags (V, K)."""
    return V * 2 * T * K * 8 + V * K * 4


def test_forward_sums_do_not_grow_with_n(monkeypatch):
    """Every buffer the forward allocates besides its (V, K, T) outputs is O(V K T): the same at any N."""
    allocated = {}
    real_zeros = torch.zeros

    def zeros(*shape, **kw):
        out = real_zeros(*shape, **kw)
        allocated.setdefault(n, []).append(out.numel() * out.element_size())
        return out

    a = torch.nn.functional.normalize(torch.randn(6, 5), dim=0).to(DEVICE)
    for n in (40, 200, 500):
        monkeypatch.setattr(torch, "zeros", zeros)
        fs.sigreg(torch.randn(2, n, 6, device=DEVICE), directions=a, backend="triton")
        monkeypatch.setattr(torch, "zeros", real_zeros)
    assert allocated[40] == allocated[200] == allocated[500] == [2 * 2 * 17 * 5 * 8, 2 * 5 * 4], allocated


@pytest.mark.skipif(not GPU, reason="the interpreter runs row tiles in order, so it cannot show an order effect")
def test_forward_is_deterministic(rng):
    """Row tiles add their sums by atomics in whatever order the GPU runs them; the int64 fixed-point
    sums make the result bitwise the same every run."""
    x, a = _inputs(rng, (2, 3000, 7), 9)
    first = fs.sigreg(x, directions=a, backend="triton", reduction=None)
    for _ in range(3):
        assert torch.equal(fs.sigreg(x, directions=a, backend="triton", reduction=None), first)


def test_many_row_tiles_match_eager(rng):
    """Many row tiles adding into the same fixed-point sums, the last one partial."""
    x, a = _inputs(rng, (2, 700, 6), 5)
    value, grad = sigreg_value_and_grad(x, a, "triton")
    ref_value, ref_grad = sigreg_value_and_grad(x, a, "eager")
    assert rel_err(value, ref_value) <= FP32_TOL
    assert rel_err(grad, ref_grad) <= FP32_TOL


@pytest.mark.parametrize("D,K", [(32, 48), (48, 40), (19, 48)], ids=lambda v: str(v))
def test_large_configs_with_and_without_aligned_loads(rng, monkeypatch, D, K):
    """The large forward and backward tiles (picked for many programs: one SM here makes every problem
    many), with the 16-byte loads of D (forward) or D and K (backward) multiples of 16 and without."""
    from fused_sigreg.backends.triton import configs, sigreg_fused

    monkeypatch.setattr(sigreg_fused, "sm_count", lambda device: 1)
    x, a = _inputs(rng, (2, 150, D), K)
    assert sigreg_fused.forward_config(2, 150, K, x.device) == configs.FORWARD_CONFIGS[0]
    assert sigreg_fused.backward_config(2, 150, x.device) in configs.BACKWARD_ALIGNED_CONFIGS
    g = torch.rand((2, K), generator=rng).to(DEVICE)
    value, grad = sigreg_value_and_grad(x, a, "triton", g, reduction=None)
    ref_value, ref_grad = sigreg_value_and_grad(x, a, "eager", g, reduction=None)
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= FP32_TOL


def test_recurrence_error_bound():
    """The fp32 recurrence stays within 2x (+1e-6) of direct fp32 cos/sin at every |p| up to 50."""
    for t_max, n_points in ((3.0, 17), (5.0, 9)):
        for row in numerics.recurrence_error(50.0, t_max, n_points, samples=20001):
            assert row["recurrence_max_abs_error"] <= 2 * row["direct_fp32_max_abs_error"] + 1e-6, row


def test_tf32_budget():
    """x and A rounded to nearest tf32 move SIGReg by < 1e-3 (value and gradient) at N=4096, D=K=512."""
    budget = numerics.tf32_budget(4096, 512, 512, mode="nearest")
    assert budget["value_rel_err"] < 1e-3 and budget["grad_rel_err"] < 1e-3


# ------------------------------------------------------------------ settings and bit patterns a GPU run meets

NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


@pytest.fixture
def restore_tf32():
    """Restores both tf32 APIs; setting the legacy flag last leaves torch in a consistent state."""
    legacy = torch.backends.cuda.matmul.allow_tf32
    global_precision = getattr(torch.backends, "fp32_precision", None)
    yield
    if global_precision is not None:
        torch.backends.fp32_precision = global_precision
    torch.backends.cuda.matmul.allow_tf32 = legacy


def _set_tf32(how: str, on: bool) -> None:
    if how == "legacy":
        torch.backends.cuda.matmul.allow_tf32 = on
    elif how == "matmul":
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    else:  # the global setting, which the matmul one inherits while it is "none"
        torch.backends.cuda.matmul.fp32_precision = "none"
        torch.backends.fp32_precision = "tf32" if on else "ieee"


@pytest.mark.parametrize("how", ["legacy", "matmul", "global"])
def test_tf32_setting_is_read_through_the_api_the_user_used(rng, restore_tf32, how):
    """Any of torch's tf32 switches is honoured, and none makes the call raise torch's
    "mix of the legacy and new APIs" error (reading allow_tf32 after the new API was used does)."""
    from fused_sigreg.backends.triton.configs import fp32_matmul_uses_tf32

    if how != "legacy" and not NEW_TF32_API:
        pytest.skip(f"torch {torch.__version__} has only the legacy allow_tf32 flag")
    x, a = _inputs(rng, (64, 40), 24)
    for on in (True, False):
        _set_tf32(how, on)
        assert fp32_matmul_uses_tf32() is on
        value, grad = sigreg_value_and_grad(x, a, "triton")
        if GPU:
            continue  # the operand rounding itself is checked under the interpreter below
        xr, ar = (numerics.round_to_tf32(x), numerics.round_to_tf32(a)) if on else (x, a)
        ref_value, ref_grad = sigreg_value_and_grad(xr, ar, "eager")
        # with tf32 the backward's dX = dP A^T also rounds dP (half a tf32 ulp, 2^-11 relative)
        assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= (1e-3 if on else FP32_TOL), (
            how,
            on,
        )


# Bit patterns: GPU NaN (0x7FFFFFFF), quiet/signalling/negative NaNs, +-inf, the largest finite
# value (rounds up to inf), values whose rounding carries into the exponent, and ordinary values.
SPECIAL_BITS = [
    0x7FFFFFFF,
    0x7FC00000,
    0x7F800001,
    0xFFFFFFFF,
    0xFFC00000,
    0x7F800000,
    0xFF800000,
    0x7F7FFFFF,
    0x3FFFF000,
    0xBFFFFFFF,
    0x00000001,
    0x80000000,
    0x00000000,
    0x3F800FFF,
    0x3F801000,
]


@triton.jit
def round_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, round_to_tf32(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


def _float_from_bits(bits) -> torch.Tensor:
    return torch.tensor([b - 2**32 if b >= 2**31 else b for b in bits], dtype=torch.int32).view(torch.float32)


def testround_to_tf32_keeps_nan_and_inf(rng):
    """The kernels' tf32 rounding (run as a Triton kernel) equals the host twin bit for bit; NaN stays
    NaN, inf stays inf, every finite value lands on the tf32 grid within half a tf32 ulp."""
    values = torch.cat(
        [
            _float_from_bits(SPECIAL_BITS),
            torch.randn(241, generator=rng) * 10.0 ** torch.randint(-30, 30, (241,), generator=rng),
        ]
    )
    x = values.to(DEVICE)
    out = torch.empty_like(x)
    round_kernel[(1,)](x, out, x.numel(), BLOCK=256)
    kernel, host = out.cpu(), numerics.round_to_tf32(values)
    assert torch.equal(kernel.view(torch.int32), host.view(torch.int32))
    assert torch.equal(torch.isnan(host), torch.isnan(values))
    inf = torch.isinf(values)
    assert torch.equal(host[inf], values[inf])
    finite = torch.isfinite(host)
    assert not (host.view(torch.int32)[finite] & 0x1FFF).any(), "not on the tf32 grid"
    v, r = values[finite].double(), host[finite].double()
    # tf32 ulp of v: 10 stored mantissa bits, and the subnormal spacing 2^-136 below 2^-126
    ulp = torch.ldexp(torch.ones_like(v), (torch.frexp(v).exponent - 11).clamp_min(-136))
    assert ((r - v).abs() <= 0.5 * ulp).all()
    assert torch.isinf(host[SPECIAL_BITS.index(0x7F7FFFFF)])  # rounds to nearest: overflows to inf


def test_nan_input_gives_nan_under_tf32(rng, restore_tf32):
    """A NaN in x with the GPU's bit pattern 0x7FFFFFFF propagates through the tf32 path (forward and backward)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    x, a = _inputs(rng, (40, 19), 9)
    x = x.clone()
    x[3, 4] = _float_from_bits([0x7FFFFFFF])[0]
    value, grad = sigreg_value_and_grad(x, a, "triton", reduction=None)
    ref_value, _ = sigreg_value_and_grad(x, a, "eager", reduction=None)
    assert torch.equal(torch.isnan(value), torch.isnan(ref_value)) and torch.isnan(value).all()
    assert torch.isnan(grad).any()


def test_launches_run_on_the_inputs_device(rng, monkeypatch):
    """Every Triton launch enters a device guard for its input's device (Triton launches on the current
    device and stream, which need not be x's)."""
    from fused_sigreg.backends.triton import launch

    seen = []
    device_of = launch.device_of

    def recording(t):
        seen.append(t.device)
        return device_of(t)

    monkeypatch.setattr(launch, "device_of", recording)
    x, a = _inputs(rng, (2, 37, 19), 9)
    sigreg_value_and_grad(x, a, "triton")
    fs.visreg(x.requires_grad_(), directions=a, backend="triton").backward()
    # SIGReg forward and backward; VISReg terms, sort, terms backward
    assert len(seen) == 5 and all(d == x.device for d in seen)
    if GPU:
        guard = device_of(x)
        assert isinstance(guard, torch.cuda.device) and guard.idx == x.device.index


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_budget_holds_in_every_random_small_case(rng, dtype):
    """Small N, D, K drawn at random: every case within the 2x budget of check, and the gradient within
    1.1x of eager's error with rounded directions — dX = dP A^T carries dP to about fp32 precision
    (tf32x2); rounding dP to tf32 instead costs up to ~1.8x in fp16."""
    failures = []
    for _ in range(16 if GPU else 6):  # seconds each in the interpreter
        V, N, D, K = (int(torch.randint(lo, hi, (1,), generator=rng)) for lo, hi in ((1, 3), (2, 48), (1, 40), (1, 40)))
        problem = make_problem(
            "sigreg", Shape(V, N, D, K), dtype, DEVICE, seed=int(torch.randint(0, 2**31, (1,), generator=rng))
        )
        row = {r["backend"]: r for r in check_problem(problem)}["triton"]
        grad_budget = float(row["budget"].split(",")[1])
        if not row["ok"] or row["grad_rel_err"] > max(1.1 * grad_budget, 1e-5):
            failures.append(row)
    assert not failures, failures
