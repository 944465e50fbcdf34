"""Command line: ``python -m fused_sigreg backends | check | bench | compile-check | numerics | memory``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Sequence

import torch

from ..dispatch import (
    BACKEND_NAMES,
    OPS,
    STAGE_OF,
    STATISTICS,
    TOOL_OPS,
    BackendUnavailableError,
    available_backends,
    registered_backends,
)
from .bench import DEFAULT_CPU_SWEEP, NOT_MEASURED, plot_results, shapes_from, sweep, write_results
from .check import FULLY_FUSED, TIE_RULE, run_checks, tf32_enabled
from .compile_check import expected_counts, extension_report, run_compile_check
from .memory import sigreg_peak_extra_bytes_model, sigreg_saved_extra_bytes
from .numerics import knot_walk_comparison, recurrence_error, tf32_budget
from .problems import OP_ALIASES, Shape

OP_ALIASES_TEXT = ", ".join(f"{alias} = {op}" for alias, op in OP_ALIASES.items())
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


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum`` (a bad value is a usage error, not a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def ints_at_least(minimum: int) -> Callable[[str], List[int]]:
    """An argparse type: comma-separated ints, each >= ``minimum``."""
    one = at_least(minimum)

    def parse(text: str) -> List[int]:
        values = [one(v) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated ints >= {minimum}, got {text!r}")
        return values

    parse.__name__ = f"comma-separated ints >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def device_here(text: str) -> torch.device:
    """An argparse type: a torch device that exists on this machine."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu or cuda:0, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:index], got {text!r}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# what --backend of bench accepts: the registry's backends, torch.compile of the reference, the fully fused kernel
BENCH_PROVIDERS = (*BACKEND_NAMES[1:], "compile", FULLY_FUSED)


def bench_providers(text: str) -> List[str]:
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in BENCH_PROVIDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names from {', '.join(BENCH_PROVIDERS)}, got {text!r}"
        )
    return names


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--op",
        default="all",
        help=f"one of {', '.join(TOOL_OPS)}, 'all' (the {len(OPS)} regularisers) or 'statistics' (lejepa's "
        f"EDF-family tests on the projections x @ W, mean over slices), comma-separated ({OP_ALIASES_TEXT})",
    )
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--device", type=device_here, default="cuda" if torch.cuda.is_available() else "cpu")


def _ops(text: str) -> List[str]:
    groups = {"all": list(OPS), "statistics": list(STATISTICS)}
    ops = [op for o in text.split(",") for op in groups.get(o, [OP_ALIASES.get(o, o)])]
    unknown = [o for o in ops if o not in TOOL_OPS]
    if unknown:
        raise SystemExit(f"unknown op(s) {unknown}; choose from {', '.join(TOOL_OPS)}, 'all' or 'statistics'")
    return ops


def cmd_backends(args) -> int:
    registered = registered_backends()
    rows = []
    for name, (ok, why) in available_backends().items():
        stages = registered[name].ops if name in registered else {}
        ops = ",".join(op for op, stage in STAGE_OF.items() if stage in stages)
        rows.append(dict(backend=name, ops=ops, usable="yes" if ok else "no", reason=why))
    print(format_table(rows, ["backend", "ops", "usable", "reason"]))
    return 0


def cmd_check(args) -> int:
    shape = Shape(args.V, args.N, args.D, args.K, args.T)
    if args.tf32 and (args.dtype != "float32" or not str(args.device).startswith("cuda")):
        raise SystemExit(
            f"--tf32 applies to --dtype float32 on a CUDA device, got --dtype {args.dtype} on {args.device}"
        )
    with tf32_enabled(args.tf32):
        rows = run_checks(_ops(args.op), shape, DTYPES[args.dtype], torch.device(args.device), args.seed)
    for r in rows:
        r["ok"] = "PASS" if r["ok"] else "FAIL"
    print(f"max relative error vs eager (value, d(loss)/dx); device {args.device}")
    print(TIE_RULE)
    columns = ["op", "backend", "dtype", "shape", "against", "value_rel_err", "grad_rel_err", "ok"]
    if any("budget" in r for r in rows):
        columns.insert(-1, "budget")
    print(format_table(rows, columns))
    return 0 if all(r["ok"] == "PASS" for r in rows) else 1


def cmd_bench(args) -> int:
    device = torch.device(args.device)
    sizes = {k: getattr(args, k) or DEFAULT_CPU_SWEEP[k] for k in ("N", "D", "K", "V")}
    shapes = shapes_from(sizes["N"], sizes["D"], sizes["K"], sizes["V"], args.T)
    backends = args.backend
    columns = [
        "op",
        "backend",
        "dtype",
        "V",
        "N",
        "D",
        "K",
        "fwd_ms_median",
        "bwd_ms_median",
        "fwd+bwd_ms_median",
        "fwd+bwd_ms_p20",
        "fwd+bwd_ms_p80",
        "peak_extra_MiB",
        "saved_MiB",
        "saved_extra_MiB",
        "status",
    ]
    if "sigreg" in _ops(args.op):
        columns[-1:-1] = ["matmul_floor_ms"]
    if device.type == "cuda":
        columns[-1:-1] = ["TFLOPs", "floor_ms", "floor_bound", "roofline_frac"]
    print(f"device {device}; {args.repeats} repeats after {args.warmup} warm-up; times in ms, memory in MiB")
    if device.type == "cpu":
        print(f"GPU: {'not measured (no CUDA device here)' if not torch.cuda.is_available() else 'use --device cuda'}")
    rows = sweep(
        _ops(args.op),
        shapes,
        DTYPES[args.dtype],
        device,
        backends,
        args.warmup,
        args.repeats,
        progress=lambda row: print(format_table([row], columns).splitlines()[-1], flush=True),
    )
    print()
    print(format_table(rows, columns))
    for path in args.out or []:
        write_results(rows, path)
        print(f"wrote {path}")
    if args.plot:
        plot_results(rows, args.plot)
        print(f"wrote {args.plot}")
    skipped = [r for r in rows if r["status"] == NOT_MEASURED]
    if skipped:
        print()
        for r in dict.fromkeys((r["backend"], r["reason"]) for r in skipped):
            print(f"{r[0]}: not measured here: {r[1]}")
    return 0 if all(r["status"] in ("ok", "OOM", NOT_MEASURED) for r in rows) else 1


def cmd_headline(args) -> int:
    from .headline import headline, reasons, verdict

    device = torch.device(args.device)
    where = "GPU" if device.type == "cuda" else "CPU stand-in sizes (kernels = aten ops, syncs = host reads)"
    print(f"SIGReg head to head on {device} ({where}); fwd+bwd ms, error = max rel. error of value and dx vs float64")
    rows = headline(device, args.repeats)
    columns = ["point", "way", "dtype", "err_vs_fp64", "budget", "ms", "gpu_busy_ms", "kernels", "syncs", "status"]
    print(format_table(rows, columns), flush=True)
    for why in reasons(rows):
        print(why)
    line = verdict(rows)
    print(line)
    return 0 if line.startswith("headline: ok") else 1


def cmd_compile_check(args) -> int:
    caps = tuple(args.arch)
    rows = run_compile_check(caps, jobs=args.jobs)
    for r in rows:
        r["ok"] = "PASS" if r["ok"] else "FAIL"
    print(
        "ahead-of-time Triton compile (no GPU needed); registers and spills from ptxas -v, shared memory from"
        " Triton, shuffles and barriers counted in the PTX (a loop body once); the ECF passes' static SASS per"
        " element of P a thread holds, outside the knot loop and in it (compile_check.sass_counts)"
    )
    print(
        format_table(
            rows,
            [
                "kernel",
                "config",
                "variant",
                "arch",
                "registers",
                "spill_stores",
                "spill_loads",
                "shared_bytes",
                "shuffles",
                "barriers",
                "sass_per_elem",
                "sass_per_knot",
                "compile_s",
                "ok",
                "error",
            ],
        )
    )

    ext_rows = extension_report(caps)
    for r in ext_rows:
        r["ok"] = "PASS" if r["ok"] else "FAIL"
    print()
    if ext_rows:
        print("CUDA extension csrc/sort_match_cuda.cu, nvcc -Xptxas -v per architecture (CUB's kernels included)")
        print(
            format_table(
                ext_rows,
                [
                    "kernel",
                    "arch",
                    "registers",
                    "spill_stores",
                    "spill_loads",
                    "stack",
                    "shared_bytes",
                    "compile_s",
                    "ok",
                    "error",
                ],
            )
        )
    else:
        print("CUDA extension: no nvcc here, not compiled")
    missing = []
    for kernel, per_arch in expected_counts().items():
        for cap in caps:
            got = sum(r["kernel"] == kernel and r["arch"] == f"sm_{cap}" for r in rows)
            if got != per_arch:
                missing.append(f"{kernel} sm_{cap}: {got} configurations compiled, the launchers have {per_arch}")
    print("\n".join(missing) or "every launchable configuration compiled for every architecture")
    return 0 if all(r["ok"] == "PASS" for r in rows + ext_rows) and not missing else 1


def cmd_numerics(args) -> int:
    for t_max, n_points in ((3.0, 17), (5.0, 9), (3.0, 1025)):
        print(
            f"angle-addition recurrence vs float64, t_max={t_max:g}, {n_points} knots"
            " (max |error| of cos/sin over knots)"
        )
        print(
            format_table(
                recurrence_error(args.p_max, t_max, n_points),
                ["p_range", "recurrence_max_abs_error", "direct_fp32_max_abs_error"],
            )
        )
        print()
    walks = knot_walk_comparison(args.p_max)
    print("ways to walk the knots, t_max=3, 17 knots: FMA slots per element and knot, max |error| vs float64")
    print(format_table(walks, list(walks[0])))
    print()
    rows = [
        dict(tf32_budget(args.N, args.D, args.K, mode), N=args.N, D=args.D, K=args.K)
        for mode in ("nearest", "truncate")
    ]
    print("SIGReg with x and A rounded to tf32 vs fp32 (relative; gradient in max norm)")
    print(format_table(rows, ["mode", "N", "D", "K", "value_rel_err", "grad_rel_err"]))
    return 0


def cmd_memory(args) -> int:
    V, N, D, K, T = args.V, args.N, args.D, args.K, args.T
    inputs = 4 * (V * N * D + D * K)
    names = {"eager": "eager", "P": "P stored (cpu; triton memory='auto')", "min": "triton memory='min'"}
    rows = []
    for variant, name in names.items():
        saved = sigreg_saved_extra_bytes(variant, V, N, K, T)
        rows.append(
            dict(
                variant=name,
                saved_extra_MiB=saved / 2**20,
                saved_with_inputs_MiB=(saved + inputs) / 2**20,
                peak_extra_MiB=sigreg_peak_extra_bytes_model(variant, V, N, D, K, T) / 2**20,
            )
        )
    print(
        f"SIGReg float32 memory accounting, V={V} N={N} D={D} K={K} T={T}"
        " (analytic; matches measurements at small sizes; peaks without Triton's bounded partial sums)"
    )
    print(format_table(rows, ["variant", "saved_extra_MiB", "saved_with_inputs_MiB", "peak_extra_MiB"]))
    e = rows[0]
    for f in rows[1:]:
        ratio = lambda key, f=f: e[key] / f[key]
        print(
            f"eager / {f['variant']}: saved with inputs {ratio('saved_with_inputs_MiB'):.1f}x, "
            f"saved beyond inputs {ratio('saved_extra_MiB'):.0f}x, peak {ratio('peak_extra_MiB'):.1f}x"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fused_sigreg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("backends", help="which backends are usable here, and why not").set_defaults(func=cmd_backends)

    check = sub.add_parser("check", help="every usable backend vs the eager reference (values and gradients)")
    _common(check)
    for dim, default in (("N", 300), ("D", 65), ("K", 129), ("V", 2)):
        check.add_argument(f"--{dim}", type=at_least(1), default=default)
    check.add_argument("--T", type=at_least(2), default=17, help="SIGReg quadrature knots")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument(
        "--tf32",
        action="store_true",
        help="float32 with tf32 matmuls (CUDA): judged against float64 within 2x of eager's own tf32 error",
    )
    check.set_defaults(func=cmd_check)

    head = sub.add_parser(
        "headline",
        help="SIGReg head to head (ours, fully fused, eager, torch.compile) at the base and LeJEPA training points",
    )
    head.add_argument("--device", type=device_here, default="cuda" if torch.cuda.is_available() else "cpu")
    head.add_argument("--repeats", type=at_least(1), default=5, help="timed calls per cell on CPU (CUDA: do_bench)")
    head.set_defaults(func=cmd_headline)

    compile_check = sub.add_parser(
        "compile-check",
        help="compile every Triton kernel config and the CUDA extension for sm_80/sm_90, with ptxas's resource report",
    )
    compile_check.add_argument(
        "--arch", type=ints_at_least(50), default="80,90", help="comma-separated compute capabilities"
    )
    compile_check.add_argument("--jobs", type=at_least(1), default=os.cpu_count() or 1, help="compiler processes")
    compile_check.set_defaults(func=cmd_compile_check)

    memory = sub.add_parser("memory", help="SIGReg saved/peak memory accounting, eager vs fused")
    for dim, default in (("V", 1), ("N", 8192), ("D", 512), ("K", 1024)):
        memory.add_argument(f"--{dim}", type=at_least(1), default=default)
    memory.add_argument("--T", type=at_least(2), default=17, help="SIGReg quadrature knots")
    memory.set_defaults(func=cmd_memory)

    numerics = sub.add_parser("numerics", help="error budgets: knot recurrence and tf32 rounding")
    numerics.add_argument("--p-max", type=positive_float, default=50.0)
    for dim in ("N", "D", "K"):
        numerics.add_argument(f"--{dim}", type=at_least(1), default=4096 if dim == "N" else 512)
    numerics.set_defaults(func=cmd_numerics)

    bench = sub.add_parser("bench", help="time / memory sweep over N, D, K, V")
    _common(bench)
    for dim in ("N", "D", "K", "V"):
        bench.add_argument(
            f"--{dim}",
            type=ints_at_least(1),
            default=None,
            help=f"comma-separated sizes (default {','.join(map(str, DEFAULT_CPU_SWEEP[dim]))})",
        )
    bench.add_argument("--T", type=at_least(2), default=17, help="SIGReg quadrature knots")
    bench.add_argument(
        "--backend",
        type=bench_providers,
        default=None,
        help=f"comma-separated, from {', '.join(BENCH_PROVIDERS)} (default: every usable one)",
    )
    bench.add_argument("--warmup", type=at_least(0), default=1)
    bench.add_argument("--repeats", type=at_least(1), default=5)
    bench.add_argument("--out", action="append", help="write results to .csv or .json (repeatable)")
    bench.add_argument("--plot", default=None, help="write a PNG plot (needs matplotlib)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BackendUnavailableError as e:  # e.g. --backend cuda where the extension cannot run: a usage error
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
