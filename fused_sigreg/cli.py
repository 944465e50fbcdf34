"""Command line: ``python -m fused_sigreg check | bench | backends``."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Sequence

import torch

from .bench import DEFAULT_CPU_SWEEP, plot_results, shapes_from, sweep, write_results
from .check import run_checks
from .dispatch import available_backends
from .problems import OPS, Shape

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def format_table(rows: List[Dict], columns: Sequence[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", default="all", help=f"one of {', '.join(OPS)} or 'all' (comma-separated list allowed)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _ops(text: str) -> List[str]:
    ops = list(OPS) if text == "all" else text.split(",")
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise SystemExit(f"unknown op(s) {unknown}; choose from {', '.join(OPS)} or 'all'")
    return ops


def cmd_backends(args) -> int:
    rows = [dict(backend=name, usable="yes" if ok else "no", reason=why)
            for name, (ok, why) in available_backends().items()]
    print(format_table(rows, ["backend", "usable", "reason"]))
    return 0


def cmd_check(args) -> int:
    shape = Shape(args.V, args.N, args.D, args.K, args.T)
    rows = run_checks(_ops(args.op), shape, DTYPES[args.dtype], torch.device(args.device), args.seed)
    for r in rows:
        r["ok"] = "PASS" if r["ok"] else "FAIL"
    print(f"max relative error vs eager (value, d(loss)/dx); device {args.device}")
    print(format_table(rows, ["op", "backend", "dtype", "shape", "against", "value_rel_err", "grad_rel_err", "ok"]))
    return 0 if all(r["ok"] == "PASS" for r in rows) else 1


def cmd_bench(args) -> int:
    device = torch.device(args.device)
    sizes = {k: getattr(args, k) or DEFAULT_CPU_SWEEP[k] for k in ("N", "D", "K", "V")}
    shapes = shapes_from(sizes["N"], sizes["D"], sizes["K"], sizes["V"], args.T)
    backends = args.backend.split(",") if args.backend else None
    columns = ["op", "backend", "dtype", "V", "N", "D", "K", "fwd_ms_median", "bwd_ms_median",
               "fwd+bwd_ms_median", "fwd+bwd_ms_p20", "fwd+bwd_ms_p80", "peak_extra_MiB", "saved_MiB",
               "saved_extra_MiB", "status"]
    print(f"device {device}; {args.repeats} repeats after {args.warmup} warm-up; times in ms, memory in MiB")
    if device.type == "cpu":
        print(f"GPU: {'not measured (no CUDA device here)' if not torch.cuda.is_available() else 'use --device cuda'}")
    rows = sweep(_ops(args.op), shapes, DTYPES[args.dtype], device, backends, args.warmup, args.repeats,
                 progress=lambda row: print(format_table([row], columns).splitlines()[-1], flush=True))
    print()
    print(format_table(rows, columns))
    for path in args.out or []:
        write_results(rows, path)
        print(f"wrote {path}")
    if args.plot:
        plot_results(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0 if all(r["status"] in ("ok", "OOM") for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fused_sigreg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("backends", help="which backends are usable here, and why not").set_defaults(func=cmd_backends)

    check = sub.add_parser("check", help="every usable backend vs the eager reference (values and gradients)")
    _common(check)
    check.add_argument("--N", type=int, default=300)
    check.add_argument("--D", type=int, default=65)
    check.add_argument("--K", type=int, default=129)
    check.add_argument("--V", type=int, default=2)
    check.add_argument("--T", type=int, default=17, help="SIGReg quadrature knots")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=cmd_check)

    bench = sub.add_parser("bench", help="time / memory sweep over N, D, K, V")
    _common(bench)
    for dim in ("N", "D", "K", "V"):
        bench.add_argument(f"--{dim}", type=_ints, default=None,
                           help=f"comma-separated sizes (default {','.join(map(str, DEFAULT_CPU_SWEEP[dim]))})")
    bench.add_argument("--T", type=int, default=17, help="SIGReg quadrature knots")
    bench.add_argument("--backend", default=None, help="comma-separated backends (default: every usable one)")
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--out", action="append", help="write results to .csv or .json (repeatable)")
    bench.add_argument("--plot", default=None, help="write a PNG plot (needs matplotlib)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
