"""What one warm call costs besides its time: GPU-busy time, device kernels and host syncs per call on
CUDA (the profiler's kernel sum and ``torch.cuda.set_sync_debug_mode``), and on a CPU the stand-in
counts: aten ops dispatched and host reads (``_local_scalar_dense``) per call. Shared by ``headline`` and
the benchmark sweep, so that a row says whether its time is the GPU's or the host's."""

from __future__ import annotations

import warnings
from typing import Callable, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """aten ops dispatched (a custom op counts once) and host reads (``_local_scalar_dense``)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def cuda_counts(run: Callable[[], None], calls: int = 5) -> Tuple[float, float, float]:
    """(GPU-busy ms, device kernels, host syncs) per call of ``run``, each over ``calls`` warm calls: a sync
    in every call reads 1, a one-time event of the process a fraction."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    device_events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.self_device_time_total for e in device_events)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(calls):
                run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchronizing" in str(w.message) for w in caught)
    return busy_us / 1e3 / calls, len(device_events) / calls, syncs / calls


def cpu_counts(run: Callable[[], None]) -> Tuple[int, int]:
    """(aten ops dispatched, host reads) in one call of ``run``."""
    with OpCounter() as counter:
        run()
    return counter.ops, counter.reads
