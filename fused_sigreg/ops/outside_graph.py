"""What runs outside torch.compile's graph (``torch.compiler.disable``): drawing from a torch.Generator,
reading a module's step, host checks. Imported on first use: ``torch.compiler.disable`` loads
torch._dynamo, and with it triton, which ``import fused_sigreg`` must not."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..distributed import sync_step
from ..rgg import sample_rgg
from ..slicing import lejepa_directions, random_directions
from ..validation import as_int
from ..validation import check_finite as _check_finite

# Why a draw leaves the graph: dynamo cannot create a torch.Generator (its "opaque object" error), and a
# step read as a Python int would be guarded on, recompiling every call.
DRAW_REASON = (
    "fused_sigreg draws its directions from a torch.Generator (step=, generator=, or a module's global_step), "
    "which torch.compile cannot trace; with fullgraph=True pass directions= (e.g. "
    "fused_sigreg.lejepa_directions(D, K, step) drawn outside the compiled function) instead"
)


MAX_STEP = 2**63 - 1  # global_step is an int64 buffer, as lejepa's


def check_step(step) -> int:
    """``step`` as an int in [0, 2**63 - 1] (int64, as lejepa's ``global_step``); a one-element integer
    tensor is read on the host."""
    if isinstance(step, torch.Tensor):
        if step.numel() != 1 or step.is_floating_point() or step.is_complex() or step.dtype == torch.bool:
            raise TypeError(f"step must be an int or a one-element integer tensor, got {step!r}")
        step = step.item()
    step = as_int(step, "step", 0)
    if step > MAX_STEP:
        raise ValueError(f"step must be an int in [0, 2**63 - 1] (an int64 step counter), got {step}")
    return step


_FINITE_REASON = (
    "check_finite=True reads the tensor on the host to raise, which torch.compile cannot trace; under "
    "fullgraph=True drop check_finite (or check the input before the compiled function)"
)


def in_backward() -> bool:
    """True while the autograd engine runs a backward pass, where activation checkpointing recomputes
    forwards (private API: torch has no public one)."""
    return torch._C._current_graph_task_id() != -1


def refuse_recompute(what: str, fix: str) -> None:
    if in_backward():
        raise RuntimeError(
            f"fused_sigreg: {what} was called during a backward pass (activation checkpointing recomputing "
            f"its forward): it would draw other directions than the forward did, and the gradient would "
            f"belong to another loss; {fix}"
        )


# The compat modules draw randn(D, K) from the global RNG (or a generator) as the official code does: inside a
# compiled graph inductor's own random numbers would differ from eager's, silently.
OFFICIAL_DRAW_REASON = (
    "fused_sigreg.compat draws its directions with torch.randn from the global RNG, as the official code does; "
    "traced, inductor would draw other numbers than eager, so the draw runs outside the graph; with "
    "fullgraph=True call the fused op (fused_sigreg.sigreg, ...) with directions= drawn outside the compiled function"
)


@torch.compiler.disable(reason=OFFICIAL_DRAW_REASON)
def official_randn(
    dim: int, num_slices: int, like: torch.Tensor, generator: Optional[torch.Generator] = None, broadcast: bool = False
) -> torch.Tensor:
    """``torch.randn(dim, num_slices)`` in ``like``'s dtype and device, from ``generator`` or the global RNG
    (which activation checkpointing restores for its recompute; a generator it does not, so that is refused);
    ``broadcast``: rank 0's draw for every rank."""
    if generator is not None:
        refuse_recompute(
            "a drop-in called with generator=", "draw outside the checkpointed function or use the global RNG"
        )
    a = torch.randn(dim, num_slices, device=like.device, dtype=like.dtype, generator=generator)
    if broadcast:
        torch.distributed.broadcast(a, src=0)
    return a


@torch.compiler.disable(reason=DRAW_REASON)
def draw_lejepa(dim: int, num_slices: int, step: int, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """lejepa's directions for ``step`` (checked: a tensor step is read here) synchronised over ranks."""
    return lejepa_directions(dim, num_slices, sync_step(check_step(step), device), device=device, dtype=dtype)


@torch.compiler.disable(reason=DRAW_REASON)
def draw_from(generator: torch.Generator, dim: int, num_slices: int, device: torch.device) -> torch.Tensor:
    """Directions from ``generator``, refused in a checkpoint recompute (the generator has moved on)."""
    refuse_recompute(
        "an op with generator=",
        "pass directions= (drawn once, outside the checkpointed function) or step= instead",
    )
    return random_directions(dim, num_slices, generator, device=device)


@torch.compiler.disable(reason=DRAW_REASON)
def module_draw(
    module, x: torch.Tensor, num_slices: int, generator, lejepa: bool, dtype
) -> Tuple[torch.Tensor, Optional[torch.Generator]]:
    """``StepCounter.draw``: the module's step read from its buffer, the draw, the step advanced."""
    refuse_recompute(
        type(module).__name__,
        "call the module outside the checkpointed function, or call the functional op with step= or "
        "directions= inside it",
    )
    synced = sync_step(check_step(module.global_step), x.device)
    dim = x.shape[-1]
    if lejepa:
        out, gen = lejepa_directions(dim, num_slices, synced, device=x.device, dtype=dtype), None
    else:
        gen = generator if generator is not None else module.step_generator(synced, x.device)
        out = random_directions(dim, num_slices, gen, device=x.device)
    with torch.no_grad():
        module.global_step.add_(1)
    return out, gen


@torch.compiler.disable(reason=DRAW_REASON)
def sample_from(generator, shape, p, mu, sigma, device) -> torch.Tensor:
    """RDMReg's target samples from ``generator``, refused in a checkpoint recompute."""
    refuse_recompute("rdmreg with generator=", "pass target_samples= and directions= drawn outside it instead")
    return sample_rgg(shape, p, mu, sigma, generator, device=device)


@torch.compiler.disable(reason=_FINITE_REASON)
def check_finite(x: torch.Tensor, name: str) -> None:
    _check_finite(x, name)
