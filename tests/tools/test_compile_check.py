"""`python -m fused_sigreg compile-check`: every Triton configuration the launchers can pick, compiled
ahead of time for sm_80 and sm_90 with the real Triton compiler (no GPU needed), and the CUDA
extension's kernels built by nvcc: 0 spills, shared memory within the architecture's limit."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="compile-check compiles the Triton kernels")

from fused_sigreg.backends.triton import (
    configs,  # noqa: E402
    sigreg_fused,  # noqa: E402
)


def _rows(stdout, kernel):
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [kernel]]


def test_compile_check_every_config_for_sm80_and_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-m", "fused_sigreg", "compile-check"], capture_output=True, text=True, env=env, timeout=1200
    )
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    ecf_variants = len(sigreg_fused.INPUT_VARIANTS)
    expected = {  # kernel -> configurations per architecture
        "ecf_partial_sums_kernel": len(configs.FORWARD_CONFIGS) * ecf_variants * 2,  # D a multiple of 16 or not
        "ecf_backward_kernel": (len(configs.BACKWARD_CONFIGS) + len(configs.BACKWARD_ALIGNED_CONFIGS)) * ecf_variants,
        "sort_match_kernel": len(configs.SORT_CONFIGS) * 2,  # quantiles / two-sample
    }
    for kernel, per_arch in expected.items():
        rows = _rows(out.stdout, kernel)
        assert rows and all("PASS" in r for r in rows), kernel
        assert sum("sm_80" in r for r in rows) == per_arch and sum("sm_90" in r for r in rows) == per_arch, kernel
    header = next(line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["kernel"])
    assert {"shuffles", "barriers"} <= set(header)
    # every sort width the dispatcher can launch is among them
    widths = {f"BN{c.block_n}" for c in configs.SORT_CONFIGS}
    assert widths == {r[1] for r in _rows(out.stdout, "sort_match_kernel")}
    # the CUDA extension's kernels get the same report (nvcc is on every machine of this project)
    if shutil.which("nvcc"):
        ext = [line for line in out.stdout.splitlines() if line.strip().startswith("block_sort_match_kernel")]
        assert len(ext) == 6 and all(line.rstrip().endswith("PASS") for line in ext)


def test_ptx_counts():
    from fused_sigreg.tools.compile_check import ptx_counts

    ptx = """
        shfl.sync.bfly.b32 %r1, %r2, 16, 31, -1;
        bar.sync 0;
        // shfl.syncx is not an instruction
        barrier.sync 1, 128;
        shfl.sync.idx.b32 %r3, %r4, 0, 31, -1;
    """
    assert ptx_counts(ptx) == dict(shuffles=2, barriers=2)
