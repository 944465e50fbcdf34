"""torch.distributed helpers with the autograd semantics of the official trainers.

Nothing here does anything unless a default process group is initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average over ranks, differentiable like lejepa's ``all_reduce(op=AVG)``.

    Implemented as ``torch.distributed.nn.functional.all_reduce(SUM) / W`` (gloo has no AVG): its
    backward all-reduces (sums) the incoming gradients, so every rank's input gradient equals the
    reference's.
    """
    if not is_distributed():
        return t
    # loaded only under torch.distributed: torch.distributed.nn pulls in the RPC framework where it exists
    import torch.distributed.nn.functional as dist_fn

    return dist_fn.all_reduce(t, op=dist.ReduceOp.SUM) / dist.get_world_size()


def sync_step(step: int, device: torch.device) -> int:
    """The maximum of ``step`` over ranks, so that every rank draws the same directions."""
    if not is_distributed():
        return int(step)
    # NCCL needs a tensor on the rank's GPU; gloo a CPU tensor.
    backend = dist.get_backend()
    dev = device if backend == "nccl" else torch.device("cpu")
    t = torch.tensor([int(step)], dtype=torch.int64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's batch along dim -2 (N), with gradients flowing back to each rank."""
    if not is_distributed():
        return x
    # loaded only under torch.distributed: torch.distributed.nn pulls in the RPC framework where it exists
    import torch.distributed.nn.functional as dist_fn

    parts = dist_fn.all_gather(x.contiguous())
    return torch.cat(parts, dim=-2)
