"""The CLI and the measurement helpers behind ``check`` and ``bench``."""

import contextlib
import csv
import dataclasses
import io
import json
import sys

import pytest
import torch

from fused_sigreg import reference
from fused_sigreg.tools import bench, check, cli
from fused_sigreg.tools.problems import Shape, make_problem


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _run(*args) -> Result:
    """``python -m fused_sigreg ARGS`` in this process (a fresh Python per call cost seconds each)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse errors and the commands' own refusals, as the shell sees them
            code = e.code if isinstance(e.code, int) else 1
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
    return Result(code or 0, out.getvalue(), err.getvalue())


def test_check_command_prints_every_op():
    out = _run("check", "--N", "20", "--D", "9", "--K", "7", "--V", "2")
    assert out.returncode == 0, out.stderr
    for op in ("sigreg", "sliced_wasserstein", "visreg", "rdmreg"):
        assert any(
            line.split()[:2] == [op, "eager"] and line.rstrip().endswith("PASS") for line in out.stdout.splitlines()
        )


def test_backends_command():
    out = _run("backends")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:]}
    moments = "moments,vcreg,extended_jarque_bera"
    statistics = f"anderson_darling,cramer_von_mises,watson,shapiro_wilk,entropy,{moments}"
    everything = f"sigreg,sliced_wasserstein,visreg,rdmreg,{statistics},nll"
    assert rows["eager"][1] == rows["cpu"][1] == rows["triton"][1] == everything
    assert rows["cuda"][1] == "sliced_wasserstein,visreg,rdmreg"


def test_bench_command_writes_csv_and_json(tmp_path):
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    out = _run(
        "bench",
        "--op",
        "sigreg,sliced_wasserstein",
        "--N",
        "64,128",
        "--D",
        "8",
        "--K",
        "16",
        "--repeats",
        "2",
        "--out",
        str(csv_path),
        "--out",
        str(json_path),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(json_path.read_text())
    assert data["environment"]["torch"] == torch.__version__
    measured = [r for r in data["rows"] if r["status"] != "not measured"]
    assert measured and all(r["status"] == "ok" for r in measured)
    # backends that cannot run here are listed, with the reason, not timed
    for r in data["rows"]:
        if r["status"] == "not measured":
            assert r["reason"] and "fwd+bwd_ms_median" not in r
    if not torch.cuda.is_available():
        assert {(r["op"], r["backend"]) for r in data["rows"] if r["status"] == "not measured"} >= {
            ("sigreg", "triton"),
            ("sliced_wasserstein", "triton"),
            ("sliced_wasserstein", "cuda"),
        }
    rows = list(csv.DictReader(line for line in csv_path.read_text().splitlines() if not line.startswith("#")))
    eager = [(r["op"], r["N"]) for r in rows if r["backend"] == "eager"]
    assert eager == [("sigreg", "64"), ("sigreg", "128"), ("sliced_wasserstein", "64"), ("sliced_wasserstein", "128")]
    assert len(rows) == len(data["rows"])
    assert all(float(r["fwd+bwd_ms_median"]) > 0 for r in rows if r["status"] == "ok")


def test_bench_plot(tmp_path):
    png = tmp_path / "r.png"
    out = _run("bench", "--op", "visreg", "--N", "32,64", "--D", "4", "--K", "8", "--repeats", "1", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_tf32_needs_float32_on_cuda():
    out = _run("check", "--tf32", "--device", "cpu", "--op", "sliced_wasserstein")
    assert out.returncode != 0 and "--tf32 applies to --dtype float32 on a CUDA device" in out.stderr


def test_check_tf32_budget_on_cuda():
    """The tf32 rows: every backend within 2x of eager's own tf32 error (run on a GPU; `make gpu` does)."""
    if not torch.cuda.is_available():
        pytest.skip("tf32 matmuls need a CUDA device")
    out = _run("check", "--tf32", "--N", "300", "--D", "65", "--K", "129", "--V", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "float32 (tf32)" in out.stdout and "FAIL" not in out.stdout


@pytest.mark.parametrize(
    "args,match",
    [
        (("bench", "--N", "-5"), "argument --N: expected an int >= 1, got -5"),
        (("bench", "--N", "0"), "argument --N: expected an int >= 1, got 0"),
        (("check", "--V", "0"), "argument --V: expected an int >= 1, got 0"),
        (("check", "--T", "1"), "argument --T: expected an int >= 2, got 1"),
        (("bench", "--repeats", "0"), "argument --repeats: expected an int >= 1, got 0"),
        (("bench", "--backend", "nosuch"), "argument --backend: expected comma-separated names from eager, "),
        (("check", "--device", "nosuch"), "argument --device: expected a torch device"),
        (("numerics", "--p-max", "-1"), "argument --p-max: expected a finite number > 0, got -1"),
        (("compile-check", "--arch", "abc"), "argument --arch: expected an int >= 50, got 'abc'"),
        (("memory", "--K", "0"), "argument --K: expected an int >= 1, got 0"),
        (("memory", "--N", "-1"), "argument --N: expected an int >= 1, got -1"),
    ],
)
def test_bad_arguments_are_usage_errors(args, match):
    """Each bad value is named, with exit status 2 and no traceback (and never a printed result)."""
    out = _run(*args)
    assert out.returncode == 2 and match in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_a_device_this_machine_lacks_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = _run("check", "--device", "cuda")
    assert out.returncode == 2 and "this machine has no CUDA device (use --device cpu)" in out.stderr


def test_a_backend_that_cannot_serve_is_a_usage_error():
    out = _run(
        "bench",
        "--op",
        "sigreg",
        "--N",
        "8",
        "--D",
        "4",
        "--K",
        "4",
        "--V",
        "1",
        "--backend",
        "cuda",
        "--device",
        "cpu",
        "--repeats",
        "1",
    )
    assert out.returncode == 2 and "backend 'cuda' was requested for sigreg_stats but cannot serve" in out.stderr


def test_unknown_op_is_rejected():
    out = _run("check", "--op", "nope")
    assert out.returncode != 0 and "unknown op" in out.stderr


@pytest.mark.parametrize("V", [1, 3])
def test_eager_sigreg_saves_the_nkt_argument(V):
    """The accounting the README quotes for N=8192, K=1024: 4 N K T bytes per view, plus O(K T)."""
    shape = Shape(V, 300, 16, 40, 17)
    problem = make_problem("sigreg", shape)
    saved = bench.saved_tensor_bytes(problem, "eager")
    nkt = 4 * V * shape.N * shape.K * shape.T
    assert nkt <= saved["saved_extra_bytes"] <= nkt + 4 * V * shape.N * shape.K + 4 * 2 * V * shape.K * shape.T + 1024
    assert saved["saved_bytes"] >= saved["saved_extra_bytes"]


def test_peak_memory_covers_the_saved_argument():
    problem = make_problem("sigreg", Shape(1, 256, 8, 32, 17))
    peak = bench.peak_extra_bytes(problem, "eager")
    assert peak >= 4 * 256 * 32 * 17  # the (N, K, T) argument is alive at some point


def test_nan_never_passes_check(registry):
    from fused_sigreg.dispatch import Backend

    assert check.relative_error(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")

    def nan_stats(x, a, t_max, n_points, reduction=None):  # differentiable, all NaN
        nan = x.float().sum() * float("nan")
        return reference.reduce_statistics(nan.expand(*x.shape[:-2], a.shape[1]), reduction)

    registry.register(Backend("cpu", priority=-1, ops={"sigreg_stats": nan_stats}))
    rows = check.check_problem(make_problem("sigreg", Shape(1, 20, 4, 6)))
    ok = {r["backend"]: r["ok"] for r in rows}
    assert ok["eager"] and not ok["cpu"]


def test_memory_command_reports_the_headline_ratio():
    out = _run("memory")
    assert out.returncode == 0, out.stderr
    assert "eager / triton memory='min': saved with inputs 31.0x" in out.stdout
    stored_p = "eager / P stored (cpu; triton memory='auto'): saved with inputs 11.2x, saved beyond inputs 17x"
    assert stored_p in out.stdout


def test_numerics_command():
    out = _run("numerics", "--N", "256", "--D", "32", "--K", "32")
    assert out.returncode == 0, out.stderr
    assert "30 <= |p| <= 50" in out.stdout and "truncate" in out.stdout


def test_roofline_arithmetic():
    from fused_sigreg.tools import roofline

    assert roofline.device_peaks("NVIDIA H200")["hbm"] == 4.8e12
    assert roofline.device_peaks("NVIDIA H100 80GB HBM3")["hbm"] == 3.35e12
    assert roofline.device_peaks("Tesla V100") is None
    # N=8192, D=512, K=512, V=1: 8.6 GFLOP of useful matmul (docs/design.md §8); RDMReg projects its targets too
    assert roofline.projection_flops(1, 8192, 512, 512) == 8_589_934_592
    assert roofline.projection_flops(1, 8192, 512, 512, "rdmreg") == 3 * 8_589_934_592 // 2
    # restarts at knots 16, 32, ... but never the last: none at T = 17, one at T = 18 and 33, two at 34
    assert [roofline.ecf_restarts(t) for t in (2, 17, 18, 33, 34)] == [0, 0, 1, 1, 2]
    # compile-check's static SASS per element and per knot; a restart adds a cos/sin pair
    work = roofline.ecf_instructions(2, 100, 10, 17)
    assert work == {"forward": int(2000 * (219.5 + 17 * 7.0)), "backward": int(2000 * (229.2 + 17 * 7.4))}
    assert roofline.ecf_instructions(1, 1, 1, 18)["forward"] == int(219.5 + 84 + 18 * 7.0)
    # the terms run one after another: the floor is their sum, and the largest names the bound
    h100 = roofline.PEAKS["H100"]
    terms = roofline.floor_seconds("sigreg", 10, 256, 128, 4096, 17, torch.bfloat16, False, "NVIDIA H100")
    flops = 2 * 10 * 256 * 128 * 4096
    # 16-bit SIGReg projects on tensor cores forward (here bound by HBM), dX in plain fp32
    forward = max(flops / h100["bf16"], (2 * 10 * 256 * 128 + 4 * 128 * 4096 + 4 * 10 * 256 * 4096) / h100["hbm"])
    backward = max(flops / h100["fp32"], 4 * (10 * 256 * 128 + 128 * 4096 + 10 * 256 * 4096) / h100["hbm"])
    assert terms["projection"] == pytest.approx(forward + backward)
    ecf = roofline.ecf_instructions(10, 256, 4096, 17)
    assert terms["passes"] == pytest.approx((ecf["forward"] + ecf["backward"]) / (h100["fp32"] / 2))
    assert terms["launches"] == 8 * roofline.LAUNCH_SECONDS  # 16-bit input: KERNELS_PER_CALL's 8
    r = roofline.roofline("sigreg", 10, 256, 128, 4096, 17, torch.bfloat16, False, 1e-3, "NVIDIA H100")
    assert r["floor_bound"] == "passes" and r["floor_ms"] == round(sum(terms.values()) * 1e3, 4)
    assert r["roofline_frac"] == round(sum(terms.values()) / 1e-3, 3)
    # a sort op projects in the reference's fp32 whatever the input, and has no ALU term
    swd = roofline.floor_seconds("sliced_wasserstein", 1, 8192, 512, 512, 17, torch.bfloat16, False, "NVIDIA H100")
    assert swd["projection"] >= 2 * 2 * 8192 * 512 * 512 / h100["fp32"]
    assert swd["passes"] == pytest.approx(28 * 8192 * 512 / h100["hbm"])
    assert roofline.roofline("sigreg", 1, 8, 4, 4, 17, torch.float32, True, 1e-3, "Tesla V100")["roofline_frac"] == (
        "unknown GPU"
    )


def test_fused_forward_operand_traffic_estimate():
    from fused_sigreg.tools import roofline

    # everything fits in L2: both orders read x and A^T once
    small = roofline.fused_forward_operand_bytes(1, 8192, 512, 1024, 4)
    assert small["row_tiles_fastest"] == small["grouped"] == 4 * (8192 * 512 + 1024 * 512)
    # VISReg's scaling configuration, fp32: x (2 GB a view) re-read for each of 20 column tiles, against
    # once; A^T (100 MB) read once a view, against once per ~1040-row window (49 of them)
    big = roofline.fused_forward_operand_bytes(8, 50000, 10000, 2500, 4)
    x, a_t = 50000 * 10000 * 4, 2500 * 10000 * 4
    assert big["row_tiles_fastest"] == 8 * (20 * x + a_t)
    assert big["grouped"] == 8 * (x + 49 * a_t)


def test_check_covers_the_fully_fused_kernel():
    """`check` (and so make gpu's sanitizer and per-dtype steps) runs SIGReg's memory="min" kernel too."""
    pytest.importorskip("triton")
    rows = check.check_problem(make_problem("sigreg", Shape(2, 40, 16, 24)))
    assert [r["backend"] for r in rows if r["backend"].startswith("triton")] == ["triton", "triton:min"]
    assert all(r["ok"] for r in rows)
    assert check.providers_for(make_problem("sliced_wasserstein", Shape(1, 40, 16, 24))) == check.backends_for(
        make_problem("sliced_wasserstein", Shape(1, 40, 16, 24))
    )


def test_check_passes_where_sort_projections_tie(registry, capsys):
    """At N = 1024, D = K = 64 fp32 projections tie exactly in some slices; eager's torch.sort may then hand
    tied rows each other's targets, the kernels keep row order. check judges gradients with the stable
    tie rule and says so (with torch.sort's own order it reported FAIL at 4e-4 to 5e-3 here)."""
    registry.backends.pop("triton")  # the interpreter would take minutes at this N; the cpu kernels are judged
    code = cli.main(
        ["check", "--N", "1024", "--D", "64", "--K", "64", "--V", "1", "--op", "sliced_wasserstein,visreg,rdmreg"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert check.TIE_RULE in out and "FAIL" not in out


def test_stable_sort_rule_fixes_the_order_of_ties():
    x = torch.tensor([[1.0, 0.0, 1.0, -0.0, 1.0]])
    with check.StableSort():
        assert x.sort(dim=-1).indices.tolist() == [[1, 3, 0, 2, 4]]
        assert torch.sort(x, dim=-1).indices.tolist() == [[1, 3, 0, 2, 4]]
