"""`make gpu` (scripts/gpu.sh) without a GPU: its refusal, and its budget, bundle and verdict logic
driven through a stand-in interpreter that claims a GPU and answers each step's command at once."""

import os
import stat
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "gpu.sh")

# Stands in for `python3` on a GPU machine: each command gpu.sh runs prints what it was given.
FAKE_PY = r"""#!/usr/bin/env bash
case "$*" in
  *torch.cuda.is_available*) exit 0 ;;
  *"import sys, torch, numpy"*) echo "python 3.12 torch 2.11.0 (stand-in)" ;;
  *"import triton"*) echo "triton 3.6.0 (stand-in)" ;;
  *get_device_capability*) echo "9.0" ;;
  *"import xdist"*) exit 1 ;;
  *"pip install"*) echo "BUILD_EXT=${FUSED_SIGREG_BUILD_EXT:-unset} BUILD_CUDA=${FUSED_SIGREG_BUILD_CUDA:-unset}" ;;
  *"has_kernel"*) echo "prebuilt extension with CUDA kernels: True" ;;
  *"-m pytest"*) echo "deadline=${FUSED_SIGREG_TEST_DEADLINE:-none} each=${FUSED_SIGREG_TEST_TIMEOUT:-none}" \
      "args=$*" "7 passed"; exit ${FAKE_PYTEST_RC:-0} ;;
  *"fused_sigreg check"*) echo "args=$*"; echo "every backend PASS" ;;
  *"fused_sigreg headline"*) echo "args=$*"; echo "headline: ok (stand-in)" ;;
  *benchmarks/run.py*) echo "args=$*"; echo "wrote benchmarks/results/cuda" ;;
  *) echo "stand-in python: unexpected command: $*" >&2; exit 99 ;;
esac
"""


def _fake_python(tmp_path):
    path = tmp_path / "python3"
    path.write_text(FAKE_PY)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _run(tmp_path, timeout=120, path="/usr/bin:/bin", **env):
    # PATH without compute-sanitizer or nvidia-smi, so the run is the same on every machine
    base = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "PY": _fake_python(tmp_path)}
    return subprocess.run(
        ["bash", SCRIPT, str(tmp_path / "out")],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _verdicts(tmp_path):
    """The run's verdict lines, as its summary (and verdicts.txt) lists them."""
    return (tmp_path / "out" / "verdicts.txt").read_text().splitlines()


def test_without_a_gpu_it_exits_2_at_once(tmp_path):
    t0 = time.monotonic()
    out = subprocess.run(
        ["bash", SCRIPT, str(tmp_path / "out")],
        cwd=REPO,
        env={**os.environ, "PY": str(tmp_path / "no-such-python")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr and "nothing was run" in out.stderr
    assert time.monotonic() - t0 < 30
    assert not any(f.endswith(".log") for f in os.listdir(tmp_path / "out"))


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="on a GPU machine this interpreter would run everything"
)
def test_this_python_without_a_gpu_is_refused(tmp_path):
    out = subprocess.run(
        ["bash", SCRIPT, str(tmp_path / "out")],
        cwd=REPO,
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr


def test_every_step_runs_with_its_limits_and_the_bundle_holds_the_logs(tmp_path):
    bundle = tmp_path / "fetch" / "gpu.tar.gz"
    out = _run(tmp_path, GPU_STEPS="build tests sanitizer check bench", GPU_BUDGET="5000", BUNDLE=str(bundle))
    assert out.returncode == 0, out.stdout + out.stderr
    verdicts = _verdicts(tmp_path)
    assert [v.split()[1] for v in verdicts] == [
        "build",
        "check_float32",
        "check_bfloat16",
        "tests",
        "sanitizer:",
        "check_tf32",
        "check_float16",
        "check_wide_sorts",
        "bench",
    ]
    assert verdicts[4].startswith("SKIPPED  sanitizer: compute-sanitizer is not on PATH")
    logs = tmp_path / "out"
    assert "golden data " in (logs / "env.txt").read_text()
    assert "BUILD_CUDA=1" in (logs / "build.log").read_text()
    tests_log = (logs / "tests.log").read_text()
    deadline = float(tests_log.split("deadline=")[1].split()[0])
    assert time.time() < deadline < time.time() + 540
    assert "each=120 " in tests_log and "--ignore=tests/tools" in tests_log  # per-test limit; no CPU tooling
    assert (
        tests_log.index("tests/test_conformance.py")
        < tests_log.index("tests/backends")
        < tests_log.index("tests/test_usage_modes.py")
    )  # kernels first
    assert "--time-limit 480" in (logs / "bench.log").read_text()  # BENCH_LIMIT's 540 s less a minute
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    log_names = {f"benchmarks/out/out/{name}" for name in ("env.txt", "tests.log", "bench.log", "verdicts.txt")}
    assert log_names | {"README.md", "docs/results.md", "benchmarks/results/cuda/results.csv"} <= names
    assert all(n.startswith(("benchmarks/", "README.md", "docs/")) for n in names)  # unpacks at the root
    assert not any(n.endswith((".tar.gz", ".partial")) for n in names)


def test_by_default_the_headline_comes_right_after_the_build(tmp_path):
    """A lease answers in order of value: the head to head, then float32 and bfloat16 parity, then the suite."""
    out = _run(tmp_path, GPU_BUDGET="5000")
    assert out.returncode == 0, out.stdout + out.stderr
    verdicts = _verdicts(tmp_path)
    assert [v.split()[1] for v in verdicts[:5]] == ["build", "headline", "check_float32", "check_bfloat16", "tests"]
    assert verdicts[1].startswith("PASS     headline") and verdicts[1].endswith("headline: ok (stand-in)")
    assert "headline --device cuda" in (tmp_path / "out" / "headline.log").read_text()


def test_a_small_budget_leaves_steps_out_and_says_why(tmp_path):
    # 200 s: the first two checks and the suite (30 s and 120 s minimums) do not fit beside the later
    # checks' (30 s each) and the sweep's (120 s) minimums, nor does the tf32 check; the sweep, last, is
    # given all that is left
    out = _run(tmp_path, GPU_STEPS="tests check bench", GPU_BUDGET="200")
    assert out.returncode == 3, out.stdout + out.stderr
    verdicts = _verdicts(tmp_path)
    skipped = [v.split()[1].rstrip(":") for v in verdicts if v.startswith("SKIPPED")]
    assert skipped == ["check_float32", "check_bfloat16", "tests", "check_tf32"]
    assert verdicts[2] == "SKIPPED  tests: GPU_BUDGET=200 s leaves 0 s for it beside the later steps (it needs 120 s)"
    assert [v.split()[1] for v in verdicts if v.startswith("PASS")] == [
        "check_float16",
        "check_wide_sorts",
        "bench",
    ]
    assert verdicts[-1].startswith("PASS     bench")
    limit = int((tmp_path / "out" / "bench.log").read_text().split("--time-limit ")[1].split()[0])
    assert 0 < limit <= 200 - 60
    assert all(v in out.stdout for v in verdicts)


def test_a_run_without_the_sweep_bundles_only_its_logs(tmp_path):
    """A second command of a lease (checks, sanitizer) must not carry back README and results files
    that the first command's sweep has rewritten."""
    bundle = tmp_path / "gpu-2.tar.gz"
    out = _run(tmp_path, GPU_STEPS="check", BUNDLE=str(bundle))
    assert out.returncode == 0, out.stdout + out.stderr
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    assert "benchmarks/out/out/check_float32.log" in names
    assert all(n.startswith("benchmarks/out/out") for n in names)


def test_a_failing_step_fails_the_run(tmp_path):
    out = _run(tmp_path, GPU_STEPS="tests", FAKE_PYTEST_RC="1", TEST_LIMIT="100")
    assert out.returncode == 1
    assert _verdicts(tmp_path)[0].startswith("FAIL     tests (rc 1")
    assert "deadline=none" in (tmp_path / "out" / "tests.log").read_text()  # no budget, no deadline


def test_prebuilt_extension_installs_without_compiling(tmp_path):
    out = _run(tmp_path, GPU_STEPS="build", GPU_BUILD="prebuilt")
    assert out.returncode == 0, out.stdout + out.stderr
    log = (tmp_path / "out" / "build.log").read_text()
    assert "BUILD_EXT=0" in log and "prebuilt extension with CUDA kernels: True" in log


def test_a_malformed_budget_is_refused(tmp_path):
    out = _run(tmp_path, GPU_BUDGET="ten minutes")
    assert out.returncode == 2 and "GPU_BUDGET must be a whole number of seconds, got 'ten minutes'" in out.stderr


@pytest.mark.parametrize("deadline,expect,absent", [("0", " skipped", " passed"), ("4e9", " passed", " skipped")])
def test_the_suite_skips_what_comes_after_its_deadline(deadline, expect, absent):
    """FUSED_SIGREG_TEST_DEADLINE (set by the tests step under GPU_BUDGET): tests not started by then
    are skipped with the reason, and the run still ends with its summary."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_layout.py"],
        cwd=REPO,
        env={**os.environ, "FUSED_SIGREG_TEST_DEADLINE": deadline},
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0 and expect in summary and absent not in summary, out.stdout + out.stderr
    assert ("the time budget ran out" in out.stdout) == (deadline == "0")


def test_sanitizer_steps_cover_every_kernel_family(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "compute-sanitizer"
    fake.write_text('#!/usr/bin/env bash\necho "sanitizer $*"; echo "========= ERROR SUMMARY: 0 errors"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = _run(tmp_path, path=f"{tools}:/usr/bin:/bin", GPU_STEPS="sanitizer")
    assert out.returncode == 0, out.stdout + out.stderr
    assert [v.split()[:2] for v in _verdicts(tmp_path)] == [
        ["PASS", "sanitizer_memcheck"],
        ["PASS", "sanitizer_racecheck"],
    ]
    for tool in ("memcheck", "racecheck"):
        runs = [
            line
            for line in (tmp_path / "out" / f"sanitizer_{tool}.log").read_text().splitlines()
            if "sanitizer" in line
        ]
        assert len(runs) == 3 and all(f"--tool {tool} --error-exitcode 9" in r for r in runs)
        assert runs[0].endswith("check --device cuda")  # every op and backend at the default sizes
        assert "--op sliced_wasserstein,rdmreg --N 5000" in runs[1]  # CUB's segmented sort
        assert runs[2].endswith("--op sigreg --N 4500 --D 64 --K 160 --V 2")  # large, 16-byte-load tiles
