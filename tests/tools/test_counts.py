"""fused_sigreg.tools.counts (what headline and the sweep record beside a time) and the sweep's use of it."""

from types import SimpleNamespace

import torch

from fused_sigreg.tools import bench, counts


def test_cpu_counts_sees_ops_and_host_reads():
    x = torch.randn(5)
    ops, reads = counts.cpu_counts(lambda: (x * 2).sum().item())
    assert ops == 3 and reads == 1  # mul, sum, _local_scalar_dense


def test_the_sweep_records_gpu_busy_time_and_kernels_on_cuda_only(monkeypatch):
    calls = []

    class Loss:
        def backward(self):
            calls.append("backward")

    def fake_cuda_counts(run):
        run()
        return 0.123456, 7.0, 0.0

    monkeypatch.setattr(bench, "cuda_counts", fake_cuda_counts)
    x = SimpleNamespace(device=torch.device("cuda"), grad="stale")
    problem = SimpleNamespace(x=x, loss=lambda v, backend: Loss())
    assert bench.call_counts(problem, "triton") == {"gpu_busy_ms": 0.1235, "kernels_per_call": 7.0}
    assert calls == ["backward"] and x.grad is None
    cpu = SimpleNamespace(x=SimpleNamespace(device=torch.device("cpu")))
    assert bench.call_counts(cpu, "cpu") == {"gpu_busy_ms": "", "kernels_per_call": ""}
