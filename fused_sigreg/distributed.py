"""torch.distributed helpers with the autograd semantics of the official trainers.

Nothing here does anything unless a default process group is initialised, and nothing inside
``single_process()``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch
import torch.distributed as dist

_LOCAL_DEPTH = 0  # > 0 inside single_process()


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Compute the statistics of this rank's batch alone, with no collective, as without
    torch.distributed (e.g. an evaluation metric on one rank: a collective there would wait for
    ranks that never call it). Steps are not synchronised and ``gather=True`` gathers nothing."""
    global _LOCAL_DEPTH
    _LOCAL_DEPTH += 1
    try:
        yield
    finally:
        _LOCAL_DEPTH -= 1


def is_distributed() -> bool:
    return _LOCAL_DEPTH == 0 and dist.is_available() and dist.is_initialized()


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
    t = torch.tensor([int(step)], dtype=torch.int64, device=_collective_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def dtype_code(dtype: torch.dtype) -> int:
    """An integer for ``dtype`` that ranks can compare in a collective."""
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def _name_disagreement(rows: List[List[int]], names: List[str], what: str) -> None:
    """Raise (on every rank alike: they all see the same rows) when ranks' values differ."""
    for i, name in enumerate(names):
        values = [row[i] for row in rows]
        if len(set(values)) > 1:
            if name.endswith("dtype"):
                values = [str(_DTYPES[v]) if v < len(_DTYPES) else "other" for v in values]
            raise ValueError(
                f"fused_sigreg: ranks disagree on {name} ({', '.join(f'rank {r}: {v}' for r, v in enumerate(values))})"
                f"; "
                f"{what} needs the same value on every rank, so pass the same arguments and input layout on each "
                f"(or compute a rank-local value inside fused_sigreg.single_process())"
            )


def check_ranks_agree(device: torch.device, what: str, **fields: int) -> None:
    """Before a collective whose shape or dtype follows ``fields``: compare them over ranks (one small
    all_gather and a host read) and raise naming the first that differs, instead of a collective that
    aborts or mixes mismatched data. No-op outside torch.distributed."""
    if not is_distributed():
        return
    mine = torch.tensor([list(fields.values())], dtype=torch.int64, device=_collective_device(device))
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, mine)
    _name_disagreement([r[0].tolist() for r in rows], list(fields), what)


def _collective_device(device: torch.device) -> torch.device:
    # NCCL needs tensors on the rank's GPU; gloo CPU tensors.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's batch along dim -2 (N), with gradients flowing back to each rank.

    Ranks may hold different N: the sizes are gathered first and shorter batches are padded for the
    collective, then cut back, so the result is exactly the concatenation of every rank's rows."""
    if not is_distributed():
        return x
    # loaded only under torch.distributed: torch.distributed.nn pulls in the RPC framework where it exists
    import torch.distributed.nn.functional as dist_fn

    # with the batch size, what every rank's batch must share for the gather: its dtype and other dims
    lead = x.shape[:-2].numel()
    signature = [x.shape[-2], dtype_code(x.dtype), x.dim(), lead, x.shape[-1]]
    mine = torch.tensor([signature], dtype=torch.int64, device=_collective_device(x.device))
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, mine)
    rows = [r[0].tolist() for r in rows]
    _name_disagreement(
        [r[1:] for r in rows], ["the input dtype", "the input's number of dims", "the view count", "D"], "gather=True"
    )
    n = x.shape[-2]
    sizes = [r[0] for r in rows]
    longest = max(sizes)
    if longest == n and min(sizes) == n:
        return torch.cat(dist_fn.all_gather(x.contiguous()), dim=-2)
    padded = torch.nn.functional.pad(x, (0, 0, 0, longest - n)).contiguous()
    parts = dist_fn.all_gather(padded)
    return torch.cat([part[..., :count, :] for part, count in zip(parts, sizes)], dim=-2)
