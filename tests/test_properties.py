"""Property-based: every public op on every backend usable here, any dtype and layout, equals eager.

Hypothesis draws the op, backend, dtype, shape (V = 1..3 views or none, N >= 2, odd D and K), scale
(near-collapse to large projections) and memory layout; on a failure it prints the falsifying
example and the seed to reproduce it (``print_blob``)."""

import pytest
import torch

pytest.importorskip("hypothesis", reason="the property test needs hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fused_sigreg as fs
from fused_sigreg import dispatch
from helpers import TRITON_DEVICE, rel_err, sort_reference

FP32_TOL = 1e-5


STAGE = dispatch.OP_STAGES
DEVICE = {None: "cpu", "cpu": "cpu", "triton": TRITON_DEVICE, "cuda": "cuda"}


def _backends():
    usable = [name for name, (ok, _) in fs.available_backends().items() if ok and name != "eager"]
    return [None, *usable]


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout."""
    if layout == "transposed":  # a view of a (.., D, N) tensor
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided":  # every other element of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


@settings(max_examples=100, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=st.sampled_from(["sigreg", "sliced_wasserstein", "visreg", "rdmreg"]),
    backend=st.sampled_from(_backends()),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    views=st.integers(0, 3),
    n=st.integers(2, 40),
    d=st.integers(1, 24),
    k=st.integers(1, 24),
    scale=st.sampled_from([1e-3, 1.0, 2.0]),  # |p| up to ~10: the range of the 1e-5 claim
    layout=st.sampled_from(["contiguous", "transposed", "strided"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_public_ops_equal_eager(op, backend, dtype, views, n, d, k, scale, layout, seed):
    if backend is not None and STAGE[op] not in dispatch.REGISTRY.backends[backend].ops:
        return  # e.g. the cuda backend has no SIGReg stage
    if backend == "triton" and dtype != torch.float32:
        return  # 16-bit Triton runs tensor-core arithmetic with its own budget (test_triton_sigreg_fused.py)
    device = DEVICE[backend]
    g = torch.Generator().manual_seed(seed)
    shape = (n, d) if views == 0 else (views, n, d)
    x = torch.randn(shape, generator=g) * scale
    if op == "rdmreg":
        x = x.relu()
    x = _layout(x.to(device, dtype), layout)
    a = torch.nn.functional.normalize(torch.randn(d, k, generator=g), dim=0)
    target = torch.rand(shape, generator=g) if op == "rdmreg" else None
    a = a.to(device)
    target = None if target is None else target.to(device)
    kwargs = {"target_samples": target} if op == "rdmreg" else {}

    v = x.detach().requires_grad_()
    value = getattr(fs, op)(v, directions=a, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad(value, v)
    if op == "sigreg":
        e = x.detach().requires_grad_()
        ref_value = fs.sigreg(e, directions=a, backend="eager")
        (ref_grad,) = torch.autograd.grad(ref_value, e)
    else:
        ref_value, ref_grad = sort_reference(op, x, a, target)
    assert value.dtype == torch.float32 and grad.dtype == dtype and grad.shape == x.shape
    # the same float32 arithmetic on the same inputs; gradients compared as returned (in x's dtype)
    tol = FP32_TOL if dtype == torch.float32 else 2.0**-7
    assert rel_err(value, ref_value) <= FP32_TOL, (value, ref_value)
    assert rel_err(grad, ref_grad.to(dtype)) <= tol


def test_the_property_covers_every_usable_backend():
    assert None in _backends() and ("cpu" in _backends()) == fs.available_backends()["cpu"][0]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_layouts_keep_their_values(layout):
    t = torch.randn(3, 5, 4)
    assert torch.equal(_layout(t, layout), t)
