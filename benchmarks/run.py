"""Regenerate the benchmark results: sweeps over N, K, D, V for every op and provider, side by side.

    python benchmarks/run.py --device cpu          # benchmarks/results/cpu/{results.csv,results.json,*.png} + README
    python benchmarks/run.py --device cuda         # the same on a GPU (fills the README's GPU section)
    python benchmarks/run.py --dtype bfloat16      # another dtype -> benchmarks/results/<device>_bfloat16/

Providers at every point of one run: "fused" (backend auto), each usable backend, and "compile"
(torch.compile of the eager reference with dynamic shapes, one compile per op serving every size:
see ``fused_sigreg.problems.compiled_reference``). Speedups are ratios to eager within the same run. OOM is recorded as a row status, not a crash; a backend that implements the op
but cannot run here (a GPU kernel on a CPU machine) is listed as "not measured", with the reason.
"""
import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fused_sigreg import bench  # noqa: E402
from fused_sigreg.check import backends_for, unmeasured_backends  # noqa: E402
from fused_sigreg.problems import OPS, make_problem  # noqa: E402
from sweeps import SWEEPS  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each device's results fill their own generated block of the README.
MARKERS = {"cpu": ("<!-- results:start -->", "<!-- results:end -->"),
           "cuda": ("<!-- results-cuda:start -->", "<!-- results-cuda:end -->")}


def providers(problem):
    return ["fused"] + backends_for(problem, include_emulated=False) + ["compile"]


def run(device, ops, warmup, repeats, quick=False, dtype=torch.float32):
    rows = []
    for op in ops:
        sweep = SWEEPS[device][op][:2] if quick else SWEEPS[device][op]
        for shape, axis in sweep:
            problem = make_problem(op, shape, dtype, device=device)
            results = {}
            for provider in providers(problem):
                backend = None if provider == "fused" else provider
                row = bench.bench_case(op, shape, backend, dtype, torch.device(device), warmup, repeats, problem)
                row["provider"], row["backend"], row["axis"] = provider, provider, axis
                results[provider] = row
                print(f"{op:7s} {axis:4s} V={shape.V} N={shape.N} D={shape.D} K={shape.K} {provider:8s} "
                      f"{row.get('fwd+bwd_ms_median', row['status'])}", flush=True)
            for provider, why in unmeasured_backends(problem).items():
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


def env_lines(device, csv_path):
    """The lines above a device's tables: where and with what the numbers were measured."""
    env = [line[2:].strip() for line in open(csv_path) if line.startswith("# ")]
    return [f"Measured on {device}: " + "; ".join(env) + "."]


def render_section(rows, lines, device="cpu"):
    """README results section of ``device`` from result rows (strings or numbers): one table per op."""
    start, end = MARKERS[device]
    out = [start, "", *lines, ""]
    for op in OPS:
        op_rows = [r for r in rows if r["op"] == op]
        if not op_rows:
            continue
        provs = list(dict.fromkeys(r["provider"] for r in op_rows))
        out += [f"**{op}** — fwd+bwd median ms (speedup vs eager in the same run); peak extra MiB fused / eager", "",
                "| axis | V | N | D | K | " + " | ".join(provs) + " | peak MiB fused / eager |",
                "|---" * (6 + len(provs)) + "|"]
        for key in dict.fromkeys((r["axis"], r["V"], r["N"], r["D"], r["K"]) for r in op_rows):
            group = {r["provider"]: r for r in op_rows if (r["axis"], r["V"], r["N"], r["D"], r["K"]) == key}
            cells = []
            for p in provs:
                r = group.get(p)
                if r is None:
                    cells.append("")
                elif r["status"] != "ok":
                    cells.append(r["status"])
                else:
                    cells.append(f"{float(r['fwd+bwd_ms_median']):.4g} ({float(r['speedup_vs_eager']):.3g}x)")
            mem = f"{group['fused']['peak_extra_MiB']} / {group['eager']['peak_extra_MiB']}"
            out.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + f" | {mem} |")
        out.append("")
    out.append(end)
    return "\n".join(out)


def update_readme(readme, section, device="cpu"):
    start, end = MARKERS[device]
    text = open(readme).read()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w") as f:
        f.write(head + section + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=sorted(SWEEPS))
    parser.add_argument("--op", default=",".join(OPS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results/<device>)")
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"), help="README to update ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="two shapes per op (smoke test)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = args.out or os.path.join(REPO, "benchmarks", "results", args.device + suffix)
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "results.csv")
    rows = []
    env = bench.environment()  # the code that runs is the code at the start (commit, dirty or not)
    for op in args.op.split(","):  # written after each op, so that a run cut short keeps what it measured
        rows += run(args.device, [op], args.warmup, args.repeats, args.quick, getattr(torch, args.dtype))
        bench.write_results(rows, csv_path, env)
        bench.write_results(rows, os.path.join(out, "results.json"), env)
    for op in args.op.split(","):
        n_rows = [r for r in rows if r["op"] == op and r["axis"] in ("N", "base") and r["status"] == "ok"]
        bench.plot_results(n_rows, os.path.join(out, f"{op}.png"))
    if args.readme and args.dtype == "float32":
        update_readme(args.readme, render_section(read_csv(csv_path), env_lines(args.device, csv_path), args.device),
                      args.device)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
