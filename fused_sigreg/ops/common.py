"""Pieces every op shares: input checks and where the slicing directions come from."""

from __future__ import annotations

from typing import Optional

import torch

from ..distributed import sync_step
from ..slicing import lejepa_directions, random_directions
from ..validation import check_directions, check_embeddings, check_finite, check_num_slices


def check_input(x, name: str, check_finite_values: bool) -> None:
    check_embeddings(x, name)
    if check_finite_values:
        check_finite(x, name)


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
) -> torch.Tensor:
    """(D, K) unit directions for x (..., N, D), from exactly one source.

    ``directions`` are used as given; ``step`` draws lejepa's directions (step synchronised to the
    maximum over ranks); ``generator`` (on x's device) draws fresh ones; with none of them, torch's
    default RNG does.
    """
    given = [n for n, v in (("directions", directions), ("step", step), ("generator", generator)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of directions=, step=, generator=; got {', '.join(given)}")
    dim = x.shape[-1]
    if directions is not None:
        check_directions(directions, dim, x.device)
        if num_slices is not None and num_slices != directions.shape[1]:
            raise ValueError(
                f"num_slices={num_slices} does not match the {directions.shape[1]} columns of directions (D, K)"
            )
        return directions
    k = default_slices if num_slices is None else num_slices
    check_num_slices(k)
    if step is not None:
        if isinstance(step, torch.Tensor):
            step = int(step.item())
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        return lejepa_directions(dim, k, sync_step(step, x.device), device=x.device)
    check_generator(generator, x.device)
    return random_directions(dim, k, generator, device=x.device)
