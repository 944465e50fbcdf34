"""The committed benchmark results and the README section generated from them stay in step."""

import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import run as results_run  # noqa: E402
from fused_sigreg import dispatch  # noqa: E402
from fused_sigreg.dispatch import STAGE_OF  # noqa: E402
from sweeps import SWEEPS  # noqa: E402

CSV = os.path.join(REPO, "benchmarks", "results", "cpu", "results.csv")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("document", ["README.md", "docs/results.md"])
def test_result_blocks_are_generated_from_the_committed_csv(device, document):
    """README's base-point summary and docs/results.md's full tables are exactly what run.py renders."""
    csv = os.path.join(REPO, "benchmarks", "results", device, "results.csv")
    text = open(os.path.join(REPO, document)).read()
    start, end = results_run.MARKERS[device]
    assert start in text and end in text
    if not os.path.exists(csv):  # no run committed yet: the block says so
        assert "not measured" in text.split(start, 1)[1].split(end, 1)[0]
        return
    render = results_run.render_summary if document == "README.md" else results_run.render_section
    rows = results_run.read_csv(csv)
    assert render(rows, results_run.env_lines(device, csv), device) in text
    assert len(rows) > 4 * len(SWEEPS[device])  # every op, several providers


def test_committed_csv_covers_every_sweep_point_and_provider():
    rows = results_run.read_csv(CSV)
    for op, sweep in SWEEPS["cpu"].items():
        got = {(int(r["V"]), int(r["N"]), int(r["D"]), int(r["K"])) for r in rows if r["op"] == op}
        assert got == {(s.V, s.N, s.D, s.K) for s, _ in sweep}, op
        providers = {r["provider"] for r in rows if r["op"] == op}
        assert {"fused", "eager", "compile"} <= providers, op
        for key in {(r["V"], r["N"], r["D"], r["K"]) for r in rows if r["op"] == op}:  # compile at every point
            assert any(r["provider"] == "compile" and (r["V"], r["N"], r["D"], r["K"]) == key for r in rows), (op, key)
        # every backend that implements the op is listed, timed or "not measured"
        stage = STAGE_OF[op]
        assert {n for n, b in dispatch.REGISTRY.backends.items() if stage in b.ops} <= providers, op
    assert all(r["status"] in ("ok", "OOM", "not measured") for r in rows)
    assert all(r["reason"] for r in rows if r["status"] == "not measured")
    for op in SWEEPS["cpu"]:
        assert os.path.exists(os.path.join(REPO, "benchmarks", "results", "cpu", f"{op}.png"))


def _sweep(tmp_path, *args):
    """Rows of a run.py sweep of the CPU sizes written to ``tmp_path`` (README and docs left alone)."""
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "run.py"), "--quick", "--repeats", "1", *args]
        + ["--out", str(tmp_path), "--readme", "", "--docs", ""],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TRITON_INTERPRET": "0"},
    )
    assert out.returncode == 0, out.stderr
    return results_run.read_csv(tmp_path / "results.csv")


def test_run_script_smoke(tmp_path):
    rows = _sweep(tmp_path, "--op", "sliced_wasserstein")
    assert {r["provider"] for r in rows} >= {"fused", "eager", "compile"}
    assert all(float(r["fwd+bwd_ms_median"]) > 0 for r in rows if r["status"] == "ok")
    if not torch.cuda.is_available():
        assert {r["provider"] for r in rows if r["status"] == "not measured"} == {"triton", "cuda"}


def test_run_script_time_limit_lists_cases_it_had_no_time_for(tmp_path):
    """A sweep cut short by --time-limit still writes every point: the cases it did not start are
    "not measured" with the reason, and the generated blocks render them."""
    rows = _sweep(tmp_path, "--op", "sliced_wasserstein,sigreg", "--time-limit", "0")
    assert {r["op"] for r in rows} == {"sliced_wasserstein", "sigreg"} and len(rows) > 4
    assert all(r["status"] == "not measured" for r in rows)
    assert all("time limit" in r["reason"] for r in rows if r["provider"] in ("fused", "eager", "compile"))
    env = results_run.env_lines("cpu", str(tmp_path / "results.csv"))
    for render in (results_run.render_summary, results_run.render_section):
        block = render(rows, env, "cpu")
        assert "not measured" in block and "| - / - |" in block


def test_a_merged_run_names_where_each_kept_op_was_measured(tmp_path):
    """``run.py --merge`` keeps the other ops' rows and says which commit measured each of them, also
    after several merges."""
    path = tmp_path / "results.csv"

    def write(env, ops):
        lines = [f"# {k}: {v}" for k, v in env.items()] + ["op,N"] + [f"{op},8" for op in ops]
        path.write_text("\n".join(lines) + "\n")

    write({"git_commit": "a" * 40, "timestamp": "t1"}, ["sigreg", "visreg"])
    kept, env = results_run.merged_rows(path, ["visreg"], {"git_commit": "b" * 40, "timestamp": "t2"})
    assert [r["op"] for r in kept] == ["sigreg"]
    assert env["other_ops_measured_at"] == f"{'a' * 12} t1 (sigreg)" and env["git_commit"] == "b" * 40
    write(env, ["sigreg", "visreg"])  # visreg measured at b, sigreg still at a
    kept, env = results_run.merged_rows(path, ["rdmreg"], {"git_commit": "c" * 40, "timestamp": "t3"})
    assert [r["op"] for r in kept] == ["sigreg", "visreg"]
    assert env["other_ops_measured_at"] == f"{'a' * 12} t1 (sigreg); {'b' * 12} t2 (visreg)"
    kept, env = results_run.merged_rows(path, ["sigreg", "visreg"], {"git_commit": "c" * 40})
    assert kept == [] and "other_ops_measured_at" not in env


def test_sweep_measures_where_people_train_first(monkeypatch, tmp_path):
    """A sweep cut short by its deadline (a GPU lease) has measured every op's base and training points: main
    runs those of every op before any other point, and each pass covers its points exactly once."""
    done = []

    def fake_run(device, ops, warmup, repeats, quick, dtype, deadline, where):
        (op,) = ops
        done.extend((op, axis) for _, axis in SWEEPS[device][op] if (axis in results_run.TRAINING_AXES) == where)
        return []

    monkeypatch.setattr(results_run, "run", fake_run)
    monkeypatch.setattr(results_run.bench, "write_results", lambda *a, **k: open(a[1], "w").close())
    monkeypatch.setattr(results_run.bench, "plot_results", lambda *a, **k: None)
    monkeypatch.setattr(results_run, "read_csv", lambda path: [])
    monkeypatch.setattr(results_run, "env_lines", lambda *a: [])
    results_run.main(["--device", "cpu", "--out", str(tmp_path), "--readme", "", "--docs", ""])
    trained = [i for i, (_, axis) in enumerate(done) if axis in results_run.TRAINING_AXES]
    assert trained == list(range(len(trained))) and len(trained) < len(done)
    assert sorted(done) == sorted((op, axis) for op in SWEEPS["cpu"] for _, axis in SWEEPS["cpu"][op])


def test_host_time_script_times_every_backend_it_is_given():
    """benchmarks/host_time.py (the host-time numbers in docs/design.md and docs/results.md) runs and
    prints a row per op and backend and the floor; in a subprocess, since it stubs the Triton launches."""
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/host_time.py",
            "--op",
            "sliced_wasserstein,rdmreg",
            "--backend",
            "triton,cpu,eager",
            "--calls",
            "1",
        ],
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[-1] == "fwd+bwd"]
    assert [(r[0], r[1]) for r in rows] == [
        (op, b) for op in ("sliced_wasserstein", "rdmreg") for b in ("triton", "cpu", "eager")
    ]
    assert all(float(r[-4]) > 0 for r in rows) and "floor" in out
