"""Slicing directions, Epps–Pulley quadrature and 1-D Gaussian quantile targets.

Everything here is deterministic given its arguments so that every backend sees the
same directions, knots and targets as the eager reference (docs/design.md §3).
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Hashable, NamedTuple, Optional

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

# (t_max, n_points) presets of the Epps–Pulley quadrature.
#   "lejepa": the lejepa repository default.
#   "paper":  LeJEPA paper Algorithm 1 (linspace(-5, 5, 17), trapz, complex ECF), which equals
#             the folded half-line rule on [0, 5] with 9 knots exactly.
QUADRATURE_PRESETS = {"lejepa": (3.0, 17), "paper": (5.0, 9)}


class Quadrature(NamedTuple):
    """Knots and weights of the folded trapezoid rule on [0, t_max], each (T,)."""

    t: torch.Tensor  # knots t_j = linspace(0, t_max, T)
    phi: torch.Tensor  # exp(-t_j^2 / 2), the N(0,1) characteristic function at t_j
    weights: torch.Tensor  # dt * [1, 2, ..., 2, 1] * phi_j


def epps_pulley_quadrature(t_max: float, n_points: int, device=None, dtype=torch.float32) -> Quadrature:
    """Knots, target CF and weights exactly as lejepa's ``EppsPulley`` builds them (float32; jepa-science's
    functional form builds them in the input's ``dtype``)."""
    t = torch.linspace(0.0, t_max, n_points, dtype=dtype, device=device)
    dt = t_max / (n_points - 1)
    # [dt, 2 dt, ..., 2 dt, dt] by device ops alone: writing a Python scalar into a CUDA tensor by index
    # (weights[0] = dt) copies it from the host and synchronises the stream on every call
    j = torch.arange(n_points, device=device)
    weights = torch.where((j == 0) | (j == n_points - 1), dt, 2.0 * dt).to(dtype)
    phi = torch.exp(-0.5 * t.square())
    return Quadrature(t, phi, weights * phi)


def lejepa_directions(dim: int, num_slices: int, step: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Directions lejepa's ``SlicingUnivariateTest`` draws at ``step``: (dim, num_slices) in ``dtype``.

    ``randn`` from a fresh generator on ``device`` seeded with ``step``, columns divided by their
    L2 norm (no epsilon). CPU and CUDA generators give different numbers, as in lejepa. lejepa draws
    in torch's default dtype: ``dtype`` reproduces that where the default is not float32.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(step))
    a = torch.randn((dim, num_slices), generator=gen, dtype=dtype, device=device)
    return a / a.norm(p=2, dim=0)


def random_directions(
    dim: int, num_slices: int, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """Unit-norm columns (dim, num_slices) float32 from ``generator`` (or torch's default RNG)."""
    if generator is not None:
        device = generator.device
    a = torch.randn((dim, num_slices), generator=generator, dtype=torch.float32, device=device)
    return a / a.norm(p=2, dim=0)


def normal_quantiles(n: int, clamp: Optional[float] = None, device=None) -> torch.Tensor:
    """N(0,1) quantiles at i/(n+1), i = 1..n, as (n,) float32.

    ``clamp=None`` is VISReg's target ``sqrt(2) * erfinv(2 i/(n+1) - 1)``; ``clamp=c`` first clips
    the levels to [c, 1 - c] (VISReg's SWD baseline uses ``c = 1e-4`` with ``Normal.icdf``).
    Computed in float64 and rounded once.
    """
    levels = torch.arange(1, n + 1, dtype=torch.float64, device=device) / (n + 1)
    if clamp is not None:
        levels = levels.clamp(clamp, 1.0 - clamp)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * levels - 1.0)).to(torch.float32)


# Call-invariant tensors (knots, weights, quantile targets) per (arguments, device): building them is
# 5-10 tiny kernel launches per call, which at training sizes cost more than the statistic. Bounded,
# since N (the quantile targets' length) may change from call to call.
_CACHE_SIZE = 64
_CACHE: "collections.OrderedDict[Hashable, object]" = collections.OrderedDict()


def _cached(key: Hashable, build: Callable[[], object]):
    """``build()`` once per key, kept for later calls; neither shared nor kept while torch.compile,
    make_fx or a FakeTensorMode traces, where a tensor built is not a real one and a real one does not
    belong. Callers never write into what they get."""
    if _tracing():
        return build()
    value = _CACHE.get(key)
    if value is None:
        # built outside inference mode and autograd, so it can enter any later graph
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        _CACHE[key] = value
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return value


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    modes = _get_current_dispatch_mode_stack()
    if not modes:
        return False
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import FunctionalTensorMode
    from torch.fx.experimental.proxy_tensor import ProxyTorchDispatchMode

    return any(isinstance(m, (FakeTensorMode, FunctionalTensorMode, ProxyTorchDispatchMode)) for m in modes)


def _device_key(device) -> torch.device:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def shared_quadrature(t_max: float, n_points: int, device=None) -> Quadrature:
    """``epps_pulley_quadrature``, built once per (t_max, n_points, device) and shared: read-only."""
    device = _device_key(device)
    key = ("quadrature", float(t_max), int(n_points), device)
    return _cached(key, lambda: epps_pulley_quadrature(t_max, n_points, device))


def shared_normal_quantiles(n: int, clamp: Optional[float] = None, device=None) -> torch.Tensor:
    """``normal_quantiles``, built once per (n, clamp, device) and shared: read-only."""
    device = _device_key(device)
    return _cached(("quantiles", int(n), clamp, device), lambda: normal_quantiles(n, clamp, device))
