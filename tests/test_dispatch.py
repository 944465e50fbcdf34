"""Backend registry: selection order, fallback with a logged reason, and forced-backend errors."""

import logging
import os

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg import dispatch
from fused_sigreg.dispatch import Backend

X = torch.randn(20, 4)
A = torch.nn.functional.normalize(torch.randn(4, 6), dim=0)


def _counting_stats(calls):
    def stats(x, a, t_max, n_points, reduction=None):
        calls.append(x.shape)
        return dispatch.REGISTRY.backends["eager"].ops["sigreg_stats"](x, a, t_max, n_points, reduction)

    return stats


def test_available_backends_explains_each():
    status = fs.available_backends()
    assert set(status) == {"eager", "triton", "cuda", "cpu"}
    assert status["eager"] == (True, "")
    for ok, why in status.values():
        assert ok or why  # every unusable backend says why


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device makes triton available")
def test_triton_without_a_gpu_explains_itself(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, why = fs.available_backends()["triton"]
    assert not ok and "no CUDA device" in why
    with pytest.raises(
        fs.BackendUnavailableError, match="backend 'triton' was requested for sigreg_stats but cannot serve"
    ):
        fs.sigreg(X, directions=A, backend="triton")


def test_forcing_a_backend_that_cannot_serve_raises():
    with pytest.raises(
        fs.BackendUnavailableError,
        match="backend 'cuda' was requested for sigreg_stats but cannot serve"
        ".*(no implementation of 'sigreg_stats'|no CUDA device"
        "|built without its CUDA sources)",
    ):
        fs.sigreg(X, directions=A, backend="cuda")
    assert issubclass(fs.BackendUnavailableError, ValueError)


def test_forcing_an_unregistered_backend_raises(registry):
    del registry.backends["cpu"]
    with pytest.raises(fs.BackendUnavailableError, match="backend 'cpu' was requested for visreg but is unavailable"):
        fs.visreg(X, directions=A, backend="cpu")
    assert fs.available_backends()["cpu"] == (False, "no such backend is registered")


def test_auto_prefers_higher_priority_and_falls_back_with_logged_reason(registry, caplog):
    calls = []
    registry.register(
        Backend(
            "cpu",
            priority=10,
            ops={"sigreg_stats": _counting_stats(calls)},
            supports=lambda op, t: (t[0].shape[0] <= 32, "N > 32 is not supported"),
        )
    )
    expected = fs.sigreg(X, directions=A, backend="eager")
    assert torch.equal(fs.sigreg(X, directions=A), expected)
    assert calls == [X.shape]  # auto picked the higher-priority backend

    big = torch.randn(40, 4)
    with caplog.at_level(logging.INFO, logger="fused_sigreg"):
        fs.sigreg(big, directions=A)
        fs.sigreg(big, directions=A)
    assert calls == [X.shape]  # fell back to eager both times
    messages = [r.getMessage() for r in caplog.records if "N > 32" in r.getMessage()]
    assert len(messages) == 1  # logged once per (op, reason)


def test_stage_priority_overrides_the_backend_priority_for_that_stage_only(registry):
    calls = []
    ops = {"sigreg_stats": _counting_stats(calls), "visreg": lambda *args: None}
    registry.register(Backend("cpu", priority=-5, ops=ops, stage_priority={"visreg": 50}))
    assert registry.select("visreg", (X, A))[0] == "cpu"  # above eager for this stage
    assert registry.select("sigreg_stats", (X, A))[0] == "eager"  # below eager elsewhere
    assert calls == []


def test_forced_backend_that_refuses_the_call_raises(registry):
    registry.register(
        Backend(
            "cpu",
            priority=10,
            ops={"sigreg_stats": _counting_stats([])},
            supports=lambda op, t: (False, "bf16 is not supported"),
        )
    )
    with pytest.raises(fs.BackendUnavailableError, match="cannot serve this call: bf16 is not supported"):
        fs.sigreg(X, directions=A, backend="cpu")


def test_forced_backend_without_the_op_raises(registry):
    registry.register(Backend("cpu", priority=10, ops={"sigreg_stats": _counting_stats([])}))
    with pytest.raises(fs.BackendUnavailableError, match="no implementation of 'visreg'"):
        fs.visreg(X, directions=A, backend="cpu")
    # ... while auto serves it with eager
    assert torch.isfinite(fs.visreg(X, directions=A))


def test_unavailable_backend_is_skipped_by_auto(registry):
    calls = []
    registry.register(
        Backend(
            "triton",
            priority=20,
            ops={"sigreg_stats": _counting_stats(calls)},
            available=lambda: (False, "triton is not installed"),
        )
    )
    fs.sigreg(X, directions=A)
    assert calls == []
    assert fs.available_backends()["triton"] == (False, "triton is not installed")


def test_environment_variable_selects_backend(registry, monkeypatch):
    calls = []
    registry.register(Backend("cpu", priority=-5, ops={"sigreg_stats": _counting_stats(calls)}))
    fs.sigreg(X, directions=A)
    assert calls == []  # eager outranks it under auto
    monkeypatch.setenv("FUSED_SIGREG_BACKEND", "cpu")
    fs.sigreg(X, directions=A)
    assert calls == [X.shape]
    fs.sigreg(X, directions=A, backend="eager")  # the argument wins over the environment
    assert len(calls) == 1


def test_kernel_compile_failure_falls_back_under_auto_only(registry):
    def broken(*args):
        raise dispatch.KernelCompileError("ptxas ran out of registers")

    registry.register(Backend("cpu", priority=10, ops={"sigreg_stats": broken}))
    expected = fs.sigreg(X, directions=A, backend="eager")
    with pytest.warns(RuntimeWarning, match="failed to compile; using eager"):
        assert torch.equal(fs.sigreg(X, directions=A), expected)
    # marked broken: auto no longer tries it, and says why when forced
    assert torch.equal(fs.sigreg(X, directions=A), expected)
    with pytest.raises(fs.BackendUnavailableError, match="ptxas ran out of registers"):
        fs.sigreg(X, directions=A, backend="cpu")
    registry.broken.clear()
    with pytest.raises(dispatch.KernelCompileError):
        fs.sigreg(X, directions=A, backend="cpu")


def test_kernel_compile_failure_of_a_stage_eager_lacks_is_raised(registry):
    """sigreg(memory="min") asks for the fully fused kernel: if it fails to compile there is no eager
    twin of that stage to fall back to, so the compile error reaches the user even under auto."""

    def broken(*args):
        raise dispatch.KernelCompileError("ptxas ran out of registers")

    registry.register(Backend("cpu", priority=10, ops={"ecf_means_min": broken}))
    with pytest.raises(dispatch.KernelCompileError, match="ptxas ran out of registers"):
        fs.sigreg(X, directions=A, memory="min")


def test_the_registry_fixture_leaves_the_package_registry_untouched(registry):
    registry.register(Backend("cpu", priority=99, ops={}))
    assert dispatch.REGISTRY is registry
    assert fs.available_backends()["cpu"] == (True, "")


def test_register_rejects_unknown_names(registry):
    with pytest.raises(ValueError, match="backend name must be one of"):
        registry.register(Backend("auto", priority=0))


def test_import_and_run_without_triton():
    """A torch without triton (e.g. a CPU-only build) imports the package and runs eager and cpu;
    the triton backend says why it is off, and forcing it raises."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail as if it were not installed
        "import torch, fused_sigreg as fs\n"
        "print(fs.available_backends()['triton'])\n"
        "x = torch.randn(40, 6); a = torch.nn.functional.normalize(torch.randn(6, 9), dim=0)\n"
        "print(float(fs.sigreg(x, directions=a)) > 0, float(fs.visreg(x, directions=a)) > 0)\n"
        "try:\n    fs.sigreg(x, directions=a, backend='triton')\n"
        "except fs.BackendUnavailableError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "(False, 'triton is not installed')"
    assert lines[1] == "True True"
    assert (
        "backend 'triton' was requested for sigreg_stats but cannot serve this call: triton is not installed"
        in (lines[2])
    )


def test_auto_skips_a_backend_for_other_devices_without_asking_it(registry, caplog):
    asked = []

    def supports(op, tensors):
        asked.append(op)
        return True, ""

    calls = []
    registry.register(
        Backend("cuda", priority=30, ops={"sigreg_stats": _counting_stats(calls)}, supports=supports, devices=("cuda",))
    )
    with caplog.at_level(logging.INFO, logger="fused_sigreg"):
        fs.sigreg(X, directions=A)
        fs.sigreg(X, directions=A)
    assert asked == [] and calls == []  # CPU tensors: never asked, never called
    messages = [r.getMessage() for r in caplog.records if "'cuda' not used" in r.getMessage()]
    assert messages == [
        "fused_sigreg: sigreg_stats: backend 'cuda' not used (it runs on cuda tensors, got cpu); trying the next one"
    ]
    # an explicit request still asks it (and it accepts here)
    fs.sigreg(X, directions=A, backend="cuda")
    assert asked == ["sigreg_stats"] and calls == [X.shape]


def test_auto_order_follows_changes_to_the_registry(registry):
    calls = []
    fs.sigreg(X, directions=A)  # caches the order for (sigreg_stats, cpu)
    registry.backends["cpu"] = Backend("cpu", priority=50, ops={"sigreg_stats": _counting_stats(calls)})
    fs.sigreg(X, directions=A)
    assert calls == [X.shape]
    del registry.backends["cpu"]
    fs.sigreg(X, directions=A)
    assert calls == [X.shape]
