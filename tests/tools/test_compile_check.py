"""`python -m fused_sigreg compile-check`: every Triton configuration the launchers can pick, compiled
ahead of time for sm_80 and sm_90 with the real Triton compiler (no GPU needed), and the CUDA
extension's kernels built by nvcc: 0 spills, shared memory within the architecture's limit.

The compile itself is CI's own step on both Triton versions (`make compile-check`,
`make compile-check-gpu-stack`: minutes of compiling); these tests check what it compiles and how
it judges the result, without compiling."""

import pytest

pytest.importorskip("triton", reason="compile-check compiles the Triton kernels")

from fused_sigreg.backends.triton import configs  # noqa: E402
from fused_sigreg.tools import cli, compile_check  # noqa: E402


def test_specs_cover_every_launchable_config():
    specs = compile_check.all_specs()
    for kernel, per_arch in compile_check.expected_counts().items():
        assert sum(s.kernel.__name__ == kernel for s in specs) == per_arch, kernel
    assert len(specs) == sum(compile_check.expected_counts().values())
    # every sort width the dispatcher can launch is among them
    sort_widths = {s.config.split()[0] for s in specs if s.kernel.__name__ == "sort_match_kernel"}
    assert sort_widths == {f"BN{c.block_n}" for c in configs.SORT_CONFIGS}


def _row(kernel, arch, ok=True):
    return dict(kernel=kernel, config="c", variant="v", arch=arch, ok=ok, error="")


@pytest.mark.parametrize("broken", ["none", "spill", "missing"])
def test_command_fails_on_a_spill_or_a_missing_config(monkeypatch, capsys, broken):
    rows = [
        _row(kernel, f"sm_{cap}")
        for kernel, n in compile_check.expected_counts().items()
        for cap in (80, 90)
        for _ in range(n)
    ]
    if broken == "spill":
        rows[3]["ok"] = False
    elif broken == "missing":
        del rows[-1]
    monkeypatch.setattr(cli, "run_compile_check", lambda caps, jobs: [dict(r) for r in rows])
    monkeypatch.setattr(cli, "extension_report", lambda caps: [])
    assert cli.main(["compile-check", "--jobs", "1"]) == (0 if broken == "none" else 1)
    out = capsys.readouterr().out
    assert ("configurations compiled, the launchers have" in out) == (broken == "missing")
    assert {"shuffles", "barriers", "sass_per_elem", "sass_per_knot"} <= set(
        next(line.split() for line in out.splitlines() if line.split()[:1] == ["kernel"])
    )


def test_ptx_counts():
    ptx = """
        shfl.sync.bfly.b32 %r1, %r2, 16, 31, -1;
        bar.sync 0;
        // shfl.syncx is not an instruction
        barrier.sync 1, 128;
        shfl.sync.idx.b32 %r3, %r4, 0, 31, -1;
    """
    assert compile_check.ptx_counts(ptx) == dict(shuffles=2, barriers=2)


def test_sass_loop_counts_take_the_largest_innermost_loop_as_the_knot_loop():
    """Three loops: a small innermost one (libdevice's large-argument path), the knot loop (innermost,
    6 instructions) and one around it; 4 elements a thread, 2 knots an iteration."""
    lines = [
        "ISETP.GE.AND P0, PT, R0, RZ, PT",  # 0x00
        "FMUL R1, R1, R2",  # 0x10 small loop 0x10-0x20
        "@P0 BRA 0x10",  # 0x20
        "FFMA R3, R3, R4, R5",  # 0x30 outer loop starts
        "FFMA R4, R4, R3, R5",  # 0x40 knot loop 0x40-0x90
        "FMUL R5, R5, R6",
        "FADD R7, R7, R5",
        "FFMA R8, R8, R4, R7",
        "VIADD R9, R9, 0x1",
        "@P1 BRA 0x40",  # 0x90
        "@P2 BRA 0x30",  # 0xa0
        "EXIT",  # 0xb0
    ]
    sass = "\n".join(f"        /*{16 * i:04x}*/                   {text} ;" for i, text in enumerate(lines))
    counts = compile_check.sass_loop_counts(sass, elements=4, knots=2)
    assert counts == dict(sass_per_elem=round((12 - 6) / 4, 1), sass_per_knot=round(6 / 4 / 2, 1))
