"""Directions, quadrature and quantile targets (``fused_sigreg.slicing``)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fused_sigreg.slicing import epps_pulley_quadrature


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("t_max,n_points", [(3.0, 17), (5.0, 9), (3.0, 2), (4.0, 1025)])
def test_quadrature_equals_lejepa_construction(t_max, n_points):
    """lejepa's EppsPulley: linspace knots, trapezoid weights dt * [1, 2, ..., 2, 1] times exp(-t^2/2)."""
    t = torch.linspace(0, t_max, n_points, dtype=torch.float32)
    dt = t_max / (n_points - 1)
    weights = torch.full((n_points,), 2 * dt, dtype=torch.float32)
    weights[[0, -1]] = dt
    phi = torch.exp(-0.5 * t.square())
    quad = epps_pulley_quadrature(t_max, n_points)
    assert torch.equal(quad.t, t) and torch.equal(quad.phi, phi) and torch.equal(quad.weights, weights * phi)


def test_quadrature_copies_nothing_into_a_device_tensor():
    """Built by device ops alone: on CUDA, writing a Python scalar into a tensor by index copies it from
    the host and synchronises the stream on every call, and breaks CUDA-graph capture. The meta device
    shows the same ops as CUDA without a GPU; a copy_ is what an indexed write dispatches."""
    with RecordOps() as record:
        quad = epps_pulley_quadrature(3.0, 17, device="meta")
    assert quad.weights.device.type == "meta"
    assert not [op for op in record.ops if "copy" in op or "index_put" in op or "item" in op], record.ops


def test_shared_call_invariants_are_built_once_and_equal_fresh_ones(monkeypatch):
    """The knots and quantile targets a hot path uses are built once per (arguments, device): no
    per-call launches for them; equal to a fresh build; rebuilt, not shared, inside a dispatch mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fused_sigreg import slicing

    monkeypatch.setattr(slicing, "_CACHE", type(slicing._CACHE)())
    first = slicing.shared_quadrature(3.0, 17)
    assert slicing.shared_quadrature(3.0, 17) is first
    assert all(torch.equal(a, b) for a, b in zip(first, slicing.epps_pulley_quadrature(3.0, 17)))
    assert slicing.shared_quadrature(5.0, 9) is not first
    q = slicing.shared_normal_quantiles(7, 1e-4)
    assert slicing.shared_normal_quantiles(7, 1e-4) is q and torch.equal(q, slicing.normal_quantiles(7, 1e-4))
    assert slicing.shared_normal_quantiles(7) is not q

    class Record(TorchDispatchMode):
        ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    with Record():
        assert slicing.shared_quadrature(3.0, 17) is first and not Record.ops  # a recorder sees no launch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = slicing.shared_quadrature(3.0, 17, device="cpu")
    assert fake is not first and slicing.shared_quadrature(3.0, 17) is first  # not taken from, nor put into, it
    with torch.inference_mode():
        slicing.shared_normal_quantiles(11)
    target = slicing.shared_normal_quantiles(11)
    assert not target.is_inference()  # usable in a later autograd graph
    for i in range(slicing._CACHE_SIZE + 5):
        slicing.shared_normal_quantiles(20 + i)
    assert len(slicing._CACHE) == slicing._CACHE_SIZE
