"""Regenerate the benchmark results: sweeps over N, K, D, V for every op and provider, side by side.

    python benchmarks/run.py --device cpu          # benchmarks/results/cpu/{results.csv,results.json,*.png},
                                                   # docs/results.md (all tables) and the README summary
    python benchmarks/run.py --device cuda         # the same on a GPU (their GPU blocks)
    python benchmarks/run.py --dtype bfloat16      # another dtype -> benchmarks/results/<device>_bfloat16/

Providers at every point of one run: "fused" (backend auto), each usable backend (for SIGReg also
"triton:min", the fully fused kernel of ``memory="min"``), and "compile"
(torch.compile of the eager reference with default settings, compiled for each point's own shapes as
a training run with a fixed batch is: see ``fused_sigreg.tools.problems.compiled_reference``).
Speedups are ratios to eager within the same run. OOM is recorded as a row status, not a crash; a
backend that implements the op but cannot run here (a GPU kernel on a CPU machine) is listed as "not
measured", with the reason.
"""

import argparse
import csv
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fused_sigreg.dispatch import OPS, TOOL_OPS  # noqa: E402
from fused_sigreg.tools import bench  # noqa: E402
from fused_sigreg.tools.check import FULLY_FUSED, providers_for, unmeasured_backends  # noqa: E402
from fused_sigreg.tools.problems import make_problem  # noqa: E402
from sweeps import SWEEPS  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each device's results fill their own generated block of the README (base point) and docs/results.md (all).
MARKERS = {
    "cpu": ("<!-- results:start -->", "<!-- results:end -->"),
    "cuda": ("<!-- results-cuda:start -->", "<!-- results-cuda:end -->"),
}


def providers(problem):
    return ["fused"] + providers_for(problem, include_emulated=False) + ["compile"]


# the base and training points: where people train
TRAINING_AXES = ("base", "training")


def passes(ops):
    """(op, where) in the order the sweep runs them: every op's base and training points (where=True), then
    the other axes (False), so that a sweep cut short by its deadline (a GPU lease) has measured where
    people train."""
    return [(op, True) for op in ops] + [(op, False) for op in ops]


def run(device, ops, warmup, repeats, quick=False, dtype=torch.float32, deadline=None, where=None):
    """Result rows of ``ops``' sweeps on ``device``: all points, or with ``where`` True only the base and
    training points, False only the others. Past ``deadline`` (a ``time.monotonic()`` value) a case is not
    started but listed as not measured, with the reason."""
    rows = []
    for op in ops:
        sweep = SWEEPS[device][op][:2] if quick else SWEEPS[device][op]
        for shape, axis in sweep:
            if where is not None and (axis in TRAINING_AXES) != where:
                continue
            problem = make_problem(op, shape, dtype, device=device)
            results = {}
            for provider in providers(problem):
                backend = None if provider == "fused" else provider
                if deadline is not None and time.monotonic() >= deadline:
                    why = "the run's time limit (--time-limit) was reached before this case"
                    row = bench.not_measured_row(op, shape, provider, dtype, torch.device(device), why)
                else:
                    row = bench.bench_case(op, shape, backend, dtype, torch.device(device), warmup, repeats, problem)
                row["provider"], row["backend"], row["axis"] = provider, provider, axis
                results[provider] = row
                print(
                    f"{op:7s} {axis:4s} V={shape.V} N={shape.N} D={shape.D} K={shape.K} {provider:8s} "
                    f"{row.get('fwd+bwd_ms_median', row['status'])}",
                    flush=True,
                )
            for provider, row in results.items():  # a second round on a CPU (bench.retime)
                backend = None if provider == "fused" else provider
                if bench.retime(problem, backend, warmup, repeats, row):
                    print(
                        f"{op:7s} {axis:4s} V={shape.V} N={shape.N} D={shape.D} K={shape.K} {provider:8s} "
                        f"{row['fwd+bwd_ms_median']} (second round)",
                        flush=True,
                    )
            unmeasured = unmeasured_backends(problem)
            if op == "sigreg" and "triton" in unmeasured:
                unmeasured[FULLY_FUSED] = unmeasured["triton"]
            for provider, why in unmeasured.items():
                row = bench.not_measured_row(op, shape, provider, dtype, torch.device(device), why)
                row["provider"], row["axis"] = provider, axis
                results[provider] = row
            eager = results["eager"].get("fwd+bwd_ms_median")
            for row in results.values():
                t = row.get("fwd+bwd_ms_median")
                row["speedup_vs_eager"] = round(eager / t, 2) if eager and t else ""
                rows.append(row)
    return rows


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def merged_rows(csv_path, ops, env):
    """(rows of the other ops in ``csv_path``, ``env`` naming where each of those ops was measured): a run of
    some ops added to committed results without re-timing the rest. The header line reads
    "other_ops_measured_at: <commit> <time> (op, op); <commit> <time> (op)"."""
    old_env = dict(line[2:].strip().split(": ", 1) for line in open(csv_path) if line.startswith("# "))
    kept = [r for r in read_csv(csv_path) if r["op"] not in ops]
    if not kept:
        return [], env
    where = {}  # ops an earlier merge kept keep their own provenance
    for part in old_env.get("other_ops_measured_at", "").split("; "):
        if part.endswith(")") and " (" in part:
            at, names = part[:-1].split(" (", 1)
            where.update({name: at for name in names.split(", ")})
    old_run = f"{old_env.get('git_commit', '?')[:12]} {old_env.get('timestamp', '?')}"
    groups = {}
    for op in dict.fromkeys(r["op"] for r in kept):
        groups.setdefault(where.get(op, old_run), []).append(op)
    env = dict(env)
    env["other_ops_measured_at"] = "; ".join(f"{at} ({', '.join(names)})" for at, names in groups.items())
    return kept, env


def env_lines(device, csv_path):
    """The lines above a device's tables: where and with what the numbers were measured."""
    env = [line[2:].strip() for line in open(csv_path) if line.startswith("# ")]
    return [f"Measured on {device}: " + "; ".join(env) + "."]


def render_section(rows, lines, device="cpu"):
    """docs/results.md block of ``device`` from result rows (strings or numbers): one table per op."""
    start, end = MARKERS[device]
    out = [start, "", *lines, ""]
    for op in TOOL_OPS:
        op_rows = [r for r in rows if r["op"] == op]
        if not op_rows:
            continue
        provs = list(dict.fromkeys(r["provider"] for r in op_rows))
        out += [
            f"**{op}** — fwd+bwd median ms (speedup vs eager in the same run); peak extra MiB fused / eager",
            "",
            "| axis | V | N | D | K | " + " | ".join(provs) + " | peak MiB fused / eager |",
            "|---" * (6 + len(provs)) + "|",
        ]
        for key in dict.fromkeys((r["axis"], r["V"], r["N"], r["D"], r["K"]) for r in op_rows):
            group = {r["provider"]: r for r in op_rows if (r["axis"], r["V"], r["N"], r["D"], r["K"]) == key}
            cells = [_cell(group.get(p)) for p in provs]
            mem = f"{_mem(group.get('fused'))} / {_mem(group.get('eager'))}"
            out.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + f" | {mem} |")
        out.append("")
    out.append(end)
    return "\n".join(out)


def _mem(row):
    """Peak extra MiB of a row, "-" where the case was not measured."""
    value = row.get("peak_extra_MiB", "") if row else ""
    return "-" if value == "" else value


def _cell(row):
    if row is None:
        return ""
    if row["status"] != "ok":
        return row["status"]
    return f"{float(row['fwd+bwd_ms_median']):.4g} ({float(row['speedup_vs_eager']):.3g}x)"


# the training points README shows beside the base point (V, N, D, K)
SUMMARY_TRAINING = ((10, 256, 128, 1024), (2, 16, 256, 256))


def render_summary(rows, lines, device="cpu"):
    """README block of ``device``: each op at its base point and at two training points (LeJEPA's V = 10,
    N = 256 and VISReg's batch of 16), fused vs eager vs torch.compile."""
    start, end = MARKERS[device]
    out = [
        start,
        "",
        *lines,
        "",
        "| op | V, N, D, K | fused | eager | compile | peak MiB fused / eager |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPS:  # the regularisers; the statistics' tables are in docs/results.md (README stays short)
        points = [("base", None), *(("training", s) for s in SUMMARY_TRAINING)]
        for axis, shape in points:
            at = {
                r["provider"]: r
                for r in rows
                if r["op"] == op
                and r["axis"] == axis
                and (shape is None or (int(r["V"]), int(r["N"]), int(r["D"]), int(r["K"])) == shape)
            }
            if "eager" not in at:
                continue
            b = at["eager"]
            mem = f"{_mem(at.get('fused'))} / {_mem(b)}"
            cells = " | ".join(_cell(at.get(p)) for p in ("fused", "eager", "compile"))
            out.append(f"| {op} | {b['V']}, {b['N']}, {b['D']}, {b['K']} | {cells} | {mem} |")
    out += ["", end]
    return "\n".join(out)


def update_block(path, section, device="cpu"):
    """Replace ``device``'s generated block in the file at ``path`` with ``section``."""
    start, end = MARKERS[device]
    text = open(path).read()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + section + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=sorted(SWEEPS))
    parser.add_argument("--op", default=",".join(TOOL_OPS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results/<device>)")
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"), help="README to update ('' to skip)")
    parser.add_argument(
        "--docs", default=os.path.join(REPO, "docs", "results.md"), help="tables to update ('' to skip)"
    )
    parser.add_argument("--quick", action="store_true", help="two shapes per op (smoke test)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the existing results of the ops not run (their commit and time are named in the header)",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds the sweep may take: cases not started by then are listed as not measured",
    )
    args = parser.parse_args(argv)
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = args.out or os.path.join(REPO, "benchmarks", "results", args.device + suffix)
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "results.csv")
    rows = []
    env = bench.environment()  # the code that runs is the code at the start (commit, dirty or not)
    if args.merge and os.path.exists(csv_path):
        rows, env = merged_rows(csv_path, args.op.split(","), env)
    for op, where in passes(args.op.split(",")):  # written after each, so that a run cut short keeps what it measured
        rows += run(
            args.device, [op], args.warmup, args.repeats, args.quick, getattr(torch, args.dtype), deadline, where
        )
        bench.write_results(rows, csv_path, env)
        bench.write_results(rows, os.path.join(out, "results.json"), env)
    for op in args.op.split(","):
        n_rows = [r for r in rows if r["op"] == op and r["axis"] in ("N", "base") and r["status"] == "ok"]
        bench.plot_results(n_rows, os.path.join(out, f"{op}.png"))
    if args.dtype == "float32":
        saved, env_text = read_csv(csv_path), env_lines(args.device, csv_path)
        if args.readme:
            update_block(args.readme, render_summary(saved, env_text, args.device), args.device)
        if args.docs:
            update_block(args.docs, render_section(saved, env_text, args.device), args.device)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
