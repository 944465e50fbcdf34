"""setup.py's decision to build the CUDA sources (no build is run here)."""

import importlib.util
import os
import stat
import types

import pytest

from helpers import REPO


@pytest.fixture(scope="module")
def setup_module():
    spec = importlib.util.spec_from_file_location("fused_sigreg_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the helpers; setup() runs only as __main__
    return module


def _toolkit(tmp_path, release: str):
    """A fake CUDA toolkit whose nvcc reports ``release``."""
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return str(tmp_path)


def _torch(version: str, cuda):
    return types.SimpleNamespace(__version__=version, version=types.SimpleNamespace(cuda=cuda))


def test_cuda_part_is_left_out_with_both_versions_named(setup_module, tmp_path):
    why = setup_module.why_no_cuda(_torch("2.11.0+cu130", "13.0"), _toolkit(tmp_path, "12.4"))
    assert "12.4" in why and "13.0" in why and "CUDA_HOME" in why


def test_matching_toolkit_builds_cuda(setup_module, tmp_path):
    assert setup_module.why_no_cuda(_torch("2.11.0+cu130", "13.0"), _toolkit(tmp_path, "13.2")) == ""


def test_cpu_torch_or_no_toolkit_says_why(setup_module, tmp_path):
    assert "CPU build" in setup_module.why_no_cuda(_torch("2.13.0+cpu", None), _toolkit(tmp_path, "13.0"))
    assert "no CUDA toolkit" in setup_module.why_no_cuda(_torch("2.11.0+cu130", "13.0"), None)


def test_forced_cuda_build_fails_loudly_on_a_mismatch(setup_module, tmp_path, monkeypatch):
    home = _toolkit(tmp_path, "12.4")
    monkeypatch.setenv("CUDA_HOME", home)
    monkeypatch.setenv("FUSED_SIGREG_BUILD_CUDA", "1")
    monkeypatch.delenv("FUSED_SIGREG_BUILD_EXT", raising=False)
    import torch

    if not torch.version.cuda:
        pytest.skip("needs a CUDA build of torch to reach the version comparison")
    with pytest.raises(RuntimeError, match="FUSED_SIGREG_BUILD_CUDA=1 but the CUDA part cannot be built: .*12.4"):
        setup_module.extensions()
    monkeypatch.delenv("FUSED_SIGREG_BUILD_CUDA")
    exts, _ = setup_module.extensions()  # auto: the CPU part only
    assert [e.name for e in exts] == ["fused_sigreg._C"] and not any(s.endswith(".cu") for s in exts[0].sources)


def test_sanitizer_build_instruments_compile_and_link(setup_module, monkeypatch):
    monkeypatch.setenv("FUSED_SIGREG_BUILD_CUDA", "0")
    monkeypatch.delenv("FUSED_SIGREG_BUILD_EXT", raising=False)
    monkeypatch.delenv("FUSED_SIGREG_SANITIZE", raising=False)
    (plain,), _ = setup_module.extensions()
    assert not any("sanitize" in a for a in plain.extra_compile_args["cxx"] + plain.extra_link_args)
    monkeypatch.setenv("FUSED_SIGREG_SANITIZE", "address,undefined")
    (ext,), _ = setup_module.extensions()
    cxx = ext.extra_compile_args["cxx"]
    assert "-fsanitize=address,undefined" in cxx and "-O3" not in cxx
    assert "-fsanitize=address,undefined" in ext.extra_link_args and "-fopenmp" in ext.extra_link_args
    monkeypatch.setenv("FUSED_SIGREG_SANITIZE", "address -o /tmp/x")
    with pytest.raises(ValueError, match="FUSED_SIGREG_SANITIZE must name gcc sanitizers.*'address -o /tmp/x'"):
        setup_module.extensions()


def test_a_test_past_the_per_test_limit_fails_naming_it(tmp_path):
    """FUSED_SIGREG_TEST_TIMEOUT (make gpu sets it): a slow test fails with the reason, the next still runs."""
    import subprocess
    import sys
    import time

    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_slow():\n    time.sleep(30)\n\ndef test_fast():\n    assert True\n"
    )
    env = {**os.environ, "FUSED_SIGREG_TEST_TIMEOUT": "1", "PYTHONPATH": str(REPO / "tests")}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "per_test_timeout", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ran past FUSED_SIGREG_TEST_TIMEOUT=1 s" in out.stdout and "1 failed, 1 passed" in out.stdout
    assert time.monotonic() - start < 25
