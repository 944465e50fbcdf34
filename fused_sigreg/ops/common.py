"""Pieces every op shares: input checks and where the slicing directions come from."""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .. import dispatch
from ..distributed import is_distributed
from ..slicing import random_directions
from ..validation import as_int, check_directions, check_embeddings

# Device types with autocast, for traced code: torch.compile in torch 2.11 cannot trace
# torch.amp.is_autocast_available, which eager calls use.
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "maia", "xla")


def _autocast_available(device: str) -> bool:
    if torch.compiler.is_compiling():
        return device in _AUTOCAST_DEVICES
    return torch.amp.is_autocast_available(device)


def autocast_off(op: Callable) -> Callable:
    """Run ``op`` with autocast disabled on its input's device.

    Under autocast the projections would be computed in 16 bits and every backend would see another
    dtype; with it off, an autocast region changes nothing: the input's own dtype decides the
    arithmetic (16-bit inputs accumulate in float32) and the result is float32 on every backend,
    as outside autocast. Like torch's own losses, the regularisers run outside autocast."""

    @functools.wraps(op)
    def run(x, *args, **kwargs):
        device = x.device.type if isinstance(x, torch.Tensor) else None
        if device is not None and _autocast_available(device) and torch.is_autocast_enabled(device):
            with torch.autocast(x.device.type, enabled=False):
                return op(x, *args, **kwargs)
        return op(x, *args, **kwargs)

    return run


def finite_or_raise(t: torch.Tensor, name: str) -> None:
    """``check_finite=True``: raise on NaN/inf, between torch.compile's graphs (a host read)."""
    from . import outside_graph  # loads torch._dynamo (and with it triton): not at import

    outside_graph.check_finite(t, name)


def check_input(x, name: str, check_finite_values: bool) -> None:
    check_embeddings(x, name)
    if check_finite_values:
        finite_or_raise(x, name)


def flatten_views(x: torch.Tensor) -> torch.Tensor:
    """(*, N, D) -> (N, D) or (V, N, D): every leading dim folded into one view dim, which is all a
    backend sees. Every statistic treats leading dims alike, so this changes no number."""
    return x if x.dim() <= 3 else x.reshape(-1, *x.shape[-2:])


def check_backend(backend) -> None:
    """A module's ``backend`` argument, checked when the module is built (None: the environment's, read per call)."""
    if backend is not None:
        dispatch.requested_backend(backend)


def check_generator(generator: Optional[torch.Generator], device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator must be on the input's device {device}, got {generator.device}")


def resolve_directions(
    x: torch.Tensor,
    num_slices: Optional[int],
    default_slices: int,
    directions: Optional[torch.Tensor] = None,
    step: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    slices_name: str = "num_slices",
    check_finite_values: bool = False,
    projections: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(D, K) unit directions for x (*, N, D), from exactly one source.

    ``directions`` (D, K) are used as given, as are ``projections`` (K, D), the official codes' layout,
    transposed; a square matrix is thus never guessed. ``step`` draws lejepa's directions (step
    synchronised to the maximum over ranks); ``generator`` (on x's device) draws fresh ones; with
    none of them, torch's default RNG does. ``slices_name`` is the op's name for K in messages;
    ``check_finite_values`` also rejects NaN/inf in given directions.
    """
    sources = (("directions", directions), ("projections", projections), ("step", step), ("generator", generator))
    given = [n for n, v in sources if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of directions=, projections=, step=, generator=; got {', '.join(given)}")
    dim = x.shape[-1]
    if projections is not None:
        check_directions(projections, dim, x.device, "projections", transposed=True)
        if check_finite_values:
            finite_or_raise(projections, "projections")
        if num_slices is not None and num_slices != projections.shape[0]:
            raise ValueError(
                f"{slices_name}={num_slices} does not match the {projections.shape[0]} rows of projections (M, D)"
            )
        return projections.t()
    if directions is not None:
        check_directions(directions, dim, x.device)
        if check_finite_values:
            finite_or_raise(directions, "directions")
        if num_slices is not None and num_slices != directions.shape[1]:
            raise ValueError(
                f"{slices_name}={num_slices} does not match the {directions.shape[1]} columns of directions (D, K)"
            )
        return directions
    k = as_int(default_slices if num_slices is None else num_slices, slices_name, 1)
    if step is not None:
        from . import outside_graph  # loads torch._dynamo (and with it triton): not at import

        return outside_graph.draw_lejepa(dim, k, step, x.device)
    check_generator(generator, x.device)
    if generator is not None:
        from . import outside_graph

        return outside_graph.draw_from(generator, dim, k, x.device)
    if is_distributed():
        _warn_rank_local_directions()
    return random_directions(dim, k, None, device=x.device)


_WARNED = []


def _warn_rank_local_directions() -> None:
    # once per process: under torch.distributed every call without step= or directions= lands here
    if _WARNED or torch.compiler.is_compiling():
        return
    _WARNED.append(True)
    warnings.warn(
        "fused_sigreg: directions are drawn from this rank's own random state, so ranks use different "
        "directions unless they are seeded alike; pass step= (SIGReg, as lejepa does) or directions= to "
        "share them",
        UserWarning,
        stacklevel=4,
    )


class StepCounter(nn.Module):
    """Base of the modules: a ``global_step`` buffer (as lejepa's) that seeds each call's randomness.

    Call ``i`` of a module draws from a generator seeded with ``global_step`` (synchronised to the
    maximum over ranks), then the step advances: runs are reproducible, every rank draws the same
    directions, torch's global RNG is never touched, and the step is saved in the state_dict.

    The buffer is read at every call, so the step used is the buffer's value however it was written
    (``fill_``, ``.data.copy_``, a numpy view, ``load_state_dict``); on a GPU that read is one host sync
    per call, as in lejepa's module (the functional ops with ``step=`` or ``directions=`` have none).
    The draw runs outside torch.compile's graph (``torch.compiler.disable``): a compiled model does
    not recompile per step, and ``fullgraph=True`` raises naming ``directions=``. Called again during
    a backward pass (activation checkpointing recomputing the forward) a module raises: the step has
    moved on, and recomputing with other directions would give the gradient of another loss.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))

    def draw(
        self,
        x: torch.Tensor,
        num_slices: int,
        generator: Optional[torch.Generator] = None,
        lejepa: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> Tuple[torch.Tensor, Optional[torch.Generator]]:
        """This call's (D, K) directions for x, and the generator that drew them (None for ``lejepa``),
        then advance ``global_step``.

        ``lejepa``: lejepa's directions for the step (in ``dtype``); else from ``generator`` when given,
        or from a generator seeded with the step."""
        from . import outside_graph

        check_generator(generator, x.device)
        return outside_graph.module_draw(self, x, num_slices, generator, lejepa, dtype)

    @staticmethod
    def step_generator(step: int, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded with ``step`` (already synchronised over ranks)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(step)
        return gen
