"""``python -m fused_sigreg bench``: time, peak memory and saved-for-backward bytes per op and backend.

Times are medians (with p20 / p80): a warmed-up ``perf_counter`` loop on CPU, ``triton.testing.do_bench``
on GPU (backward there is fwd+bwd minus fwd). Memory on CPU comes from the profiler's allocator
events (peak of the running sum over one fwd+bwd), on GPU from the caching allocator's peak. Saved bytes
are the unique storages the autograd graph keeps (``saved_tensors_hooks``), also net of the op's own inputs.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch

from ..backends.triton.configs import fp32_matmul_uses_tf32
from .check import backends_for, unmeasured_backends
from .counts import cuda_counts
from .problems import Problem, Shape, fresh_compiles, make_problem
from .roofline import roofline

# Status of a row for a backend that implements the op but cannot run here (listed, not timed).
NOT_MEASURED = "not measured"
# On a CPU, ``repeats`` is a minimum: a call is warmed up and timed until each phase holds this many ms (at
# most MAX_CPU_REPEATS calls), so that a 0.3 ms call is not judged on 3 samples (the sort ops at V=2, N=16
# measured 1.25x eager that way and 1.54x with 30 repeats side by side).
MIN_CPU_TIMED_MS = 100.0
MAX_CPU_REPEATS = 300
# On a CPU the sweep times every provider of a point in a second round after the first (``retime``) and
# keeps each provider's faster round (lower median fwd+bwd): load from outside the process comes in bursts
# that land in one round of one provider. With one round, sweeps on this repo's 2-core machine reported the
# same code 2-4x slower at one point in two runs (SWD at V=10, N=64, K=4096: auto 63 ms against the cpu
# backend it resolves to at 17 ms). Rounds slower than MAX_RETIMED_MS are not repeated: their many samples
# already span any burst, and the sweep's time goes there.
MAX_RETIMED_MS = 2000.0

# CPU sweep of ``bench`` with no size arguments: finishes in a few minutes on 2 cores.
DEFAULT_CPU_SWEEP = {
    "N": (1024, 4096),
    "D": (256,),
    "K": (256,),
    "V": (1,),
}


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines on fd 2; keep tables readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentiles(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "p20": pick(0.2), "p80": pick(0.8)}


def _do_bench_phases(problem: Problem, backend: str) -> Dict[str, Dict[str, float]]:
    """CUDA: triton.testing.do_bench (L2 flushed, CUDA-event timed) of forward and of forward+backward;
    backward is their difference at each quantile."""
    from triton.testing import do_bench

    def fwd():  # with autograd recording, as in training; the graph is dropped
        problem.loss(problem.x, backend)

    def fwd_bwd():
        problem.x.grad = None
        problem.loss(problem.x, backend).backward()

    quantiles = [0.5, 0.2, 0.8]
    f = do_bench(fwd, quantiles=quantiles)
    fb = do_bench(fwd_bwd, quantiles=quantiles)
    problem.x.grad = None
    names = ("median", "p20", "p80")
    return {
        "fwd": dict(zip(names, f)),
        "fwd+bwd": dict(zip(names, fb)),
        "bwd": dict(zip(names, (b - a for a, b in zip(f, fb)))),
    }


def time_phases(problem: Problem, backend: str, warmup: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """Milliseconds of forward, backward and forward+backward: do_bench on CUDA, a warmed-up
    perf_counter loop on CPU (``repeats`` calls or more: MIN_CPU_TIMED_MS)."""
    device = problem.x.device
    if device.type == "cuda":
        return _do_bench_phases(problem, backend)
    samples = {"fwd": [], "bwd": [], "fwd+bwd": []}
    i = 0
    while i < warmup + repeats or (
        repeats > 0 and sum(samples["fwd+bwd"]) < MIN_CPU_TIMED_MS and len(samples["fwd+bwd"]) < MAX_CPU_REPEATS
    ):
        problem.x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        loss = problem.loss(problem.x, backend)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            samples["fwd"].append((t1 - t0) * 1e3)
            samples["bwd"].append((t2 - t1) * 1e3)
            samples["fwd+bwd"].append((t2 - t0) * 1e3)
        i += 1
    problem.x.grad = None
    return {phase: _percentiles(s) for phase, s in samples.items()}


def retime(problem: Problem, backend: str, warmup: int, repeats: int, row: Dict) -> bool:
    """CPU: time ``row``'s provider again and keep the round with the lower median fwd+bwd (all three
    phases from that round). Whether the second round was kept."""
    first = row.get("fwd+bwd_ms_median")
    if problem.x.device.type != "cpu" or row.get("status") != "ok" or not first or first > MAX_RETIMED_MS:
        return False
    again = time_phases(problem, backend, warmup, repeats)
    if again["fwd+bwd"]["median"] >= first:
        return False
    for phase, stats in again.items():
        for name, value in stats.items():
            row[f"{phase}_ms_{name}"] = round(value, 3)
    return True


def call_counts(problem: Problem, backend: str) -> Dict[str, object]:
    """Whether a row's time is the GPU's or the host's: on CUDA the GPU-busy ms and device kernels per warm
    fwd+bwd (the profiler's, every provider alike); empty on a CPU, where no count means the same for every
    provider (a dispatch mode sees aten ops, not kernels, and makes torch.compile run eager)."""
    if problem.x.device.type != "cuda":
        return {"gpu_busy_ms": "", "kernels_per_call": ""}

    def fwd_bwd():
        problem.x.grad = None
        problem.loss(problem.x, backend).backward()

    busy_ms, kernels, _ = cuda_counts(fwd_bwd)
    problem.x.grad = None
    return {"gpu_busy_ms": round(busy_ms, 4), "kernels_per_call": kernels}


def saved_tensor_bytes(problem: Problem, backend: str) -> Dict[str, int]:
    """Bytes of the unique storages saved for backward: all of them, and those beyond the inputs."""
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = problem.loss(problem.x, backend)
    del loss
    inputs = {t.untyped_storage().data_ptr() for t in problem.inputs()}
    total = sum(storages.values())
    return {"saved_bytes": total, "saved_extra_bytes": total - sum(n for p, n in storages.items() if p in inputs)}


def peak_extra_bytes(problem: Problem, backend: str) -> int:
    """Peak bytes allocated above the starting point during one forward+backward."""
    device = problem.x.device
    run = lambda: problem.loss(problem.x, backend).backward()
    problem.x.grad = None
    if device.type == "cuda":
        # one unmeasured run first: one-time allocations (cuBLAS's workspace, 32 MiB on Hopper) are
        # not the op's memory
        run()
        problem.x.grad = None
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        running = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            running += e.nbytes()
            peak = max(peak, running)
    problem.x.grad = None
    return int(peak)


def matmul_floor_ms(problem: Problem, warmup: int, repeats: int) -> float:
    """Two projection matmuls (P = x A forward, dX = dP A^T backward) at this machine's measured
    matmul rate: the floor of any SIGReg forward + backward."""
    x = problem.x.detach().float()
    a = problem.fixed["directions"].float()
    device = x.device
    samples = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        x @ a
        _sync(device)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    return 2 * statistics.median(samples)


def bench_case(
    op: str, shape: Shape, backend: str, dtype, device, warmup: int, repeats: int, problem: Optional[Problem] = None
) -> Dict:
    problem = problem or make_problem(op, shape, dtype, device)
    row = _row_key(op, shape, backend, dtype, device)
    if backend == "compile":
        fresh_compiles()  # torch.compile's default: static shapes, compiled for this point (in the warm-up)
    try:
        for phase, stats in time_phases(problem, backend, warmup, repeats).items():
            for name, value in stats.items():
                row[f"{phase}_ms_{name}"] = round(value, 3)
        row.update(call_counts(problem, backend))
        if op == "sigreg":
            row["matmul_floor_ms"] = round(matmul_floor_ms(problem, warmup, repeats), 3)
        if problem.x.device.type == "cuda":
            row.update(
                roofline(
                    op,
                    shape.V,
                    shape.N,
                    shape.D,
                    shape.K,
                    shape.T,
                    problem.x.dtype,
                    fp32_matmul_uses_tf32(),
                    row["fwd+bwd_ms_median"] / 1e3,
                    torch.cuda.get_device_name(problem.x.device),
                )
            )
        row["peak_extra_MiB"] = round(peak_extra_bytes(problem, backend) / 2**20, 2)
        row.update(
            {k.replace("_bytes", "_MiB"): round(v / 2**20, 2) for k, v in saved_tensor_bytes(problem, backend).items()}
        )
        row["status"] = "ok"
    except torch.OutOfMemoryError:
        row["status"] = "OOM"
    return row


def sweep(
    ops: Iterable[str],
    shapes: Iterable[Shape],
    dtype,
    device,
    backends: Optional[List[str]],
    warmup: int,
    repeats: int,
    progress: Callable[[Dict], None] = lambda row: None,
) -> List[Dict]:
    rows = []
    for op in ops:
        for shape in shapes:
            problem = make_problem(op, shape, dtype, device)
            for backend in backends or backends_for(problem, include_emulated=False):
                row = bench_case(op, shape, backend, dtype, device, warmup, repeats, problem)
                rows.append(row)
                progress(row)
            if backends is None:
                for backend, why in unmeasured_backends(problem).items():
                    row = not_measured_row(op, shape, backend, dtype, device, why)
                    rows.append(row)
                    progress(row)
    return rows


def not_measured_row(op: str, shape: Shape, backend: str, dtype, device, why: str) -> Dict:
    """A provider of ``op`` that cannot run here (e.g. a GPU kernel on a CPU machine): listed, not timed."""
    return dict(_row_key(op, shape, backend, dtype, device), status=NOT_MEASURED, reason=why)


def _row_key(op: str, shape: Shape, backend: str, dtype, device) -> Dict:
    """The columns that name a case: op, provider, device, dtype and sizes (T only for SIGReg)."""
    return dict(
        op=op,
        backend=backend,
        device=str(device),
        dtype=str(dtype).replace("torch.", ""),
        V=shape.V,
        N=shape.N,
        D=shape.D,
        K=shape.K,
        T=shape.T if op == "sigreg" else "",
    )


def shapes_from(N, D, K, V, T=17) -> List[Shape]:
    return [Shape(v, n, d, k, T) for v in V for n in N for d in D for k in K]


def _command_output(args: List[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, cwd=os.path.dirname(__file__), timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> Dict:
    """Where the numbers come from: device, driver, versions, commit (+dirty for uncommitted changes), time."""
    # FUSED_SIGREG_COMMIT names the commit where the tree was copied without its history (a remote run)
    commit = os.environ.get("FUSED_SIGREG_COMMIT") or _command_output(["git", "rev-parse", "HEAD"])
    if (
        commit
        and not os.environ.get("FUSED_SIGREG_COMMIT")
        and _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    ):
        commit += "+dirty"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    env = dict(
        cpu=platform.processor() or platform.machine(),
        cpu_threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "not present",
    )
    if torch.cuda.is_available():
        driver = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        env.update(
            gpu_driver=driver.splitlines()[0] if driver else "unknown",
            cuda=torch.version.cuda,
            fp32_matmul="tf32" if fp32_matmul_uses_tf32() else "ieee",
        )
    env.update(
        torch=torch.__version__,
        triton=triton_version,
        python=platform.python_version(),
        git_commit=commit or "unknown",
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return env


def write_results(rows: List[Dict], path: str, env: Optional[Dict] = None) -> None:
    """CSV (one row per case, environment in leading '#' lines) or JSON ({environment, rows}).
    ``env`` defaults to ``environment()`` now; a long run passes the one taken when it started."""
    env = env or environment()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        for k, v in env.items():
            f.write(f"# {k}: {v}\n")
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot_results(rows: List[Dict], path: str) -> None:
    """Time (fwd+bwd median) and peak memory against N, one line per (op, backend)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'fused_sigreg[plot]'") from e
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for key in dict.fromkeys((r["op"], r["backend"], r["D"], r["K"], r["V"]) for r in rows if r["status"] == "ok"):
        pts = sorted(
            (r["N"], r["fwd+bwd_ms_median"], r["peak_extra_MiB"])
            for r in rows
            if r["status"] == "ok" and (r["op"], r["backend"], r["D"], r["K"], r["V"]) == key
        )
        label = f"{key[0]} {key[1]} D={key[2]} K={key[3]} V={key[4]}"
        ax_t.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax_m.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=label)
    for ax, ylabel in ((ax_t, "fwd+bwd median ms"), (ax_m, "peak extra MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
