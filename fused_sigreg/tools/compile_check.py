"""``python -m fused_sigreg compile-check``: every launchable Triton kernel configuration, compiled
ahead of time for sm_80 and sm_90 without a GPU, with ptxas's resource report (docs/design.md §7).

A configuration passes when it compiles, spills no bytes and its shared memory fits the
architecture's per-block limit. Triton allocates shared memory dynamically, so the figure is
Triton's own (``metadata.shared``); registers and spills come from ``ptxas -v``. The report also
counts, in the PTX, warp shuffles and block barriers (static counts: a loop body counts once), the
price of reductions across lanes and warps that a kernel's layout choices decide.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from typing import Dict, List

from ..backends.triton.configs import CompileSpec

# Per-block shared memory limits (opt-in maximum): A100 163 KiB, H100 227 KiB.
ARCHS = {80: 166912, 90: 232448}


def all_specs() -> List[CompileSpec]:
    # imported here, not at the top: the launchers import triton, which this module's users may lack
    from ..backends.triton import (
        moment_stat,
        order_nll,
        sigreg_fused,
        sigreg_passes,
        sort_match,
        sort_stat,
        visreg_terms,
    )

    return [
        *sigreg_fused.compile_specs(),
        *sigreg_passes.compile_specs(),
        *sort_match.compile_specs(),
        *sort_stat.compile_specs(),
        *order_nll.compile_specs(),
        *moment_stat.compile_specs(),
        *visreg_terms.compile_specs(),
    ]


def expected_counts() -> Dict[str, int]:
    """Configurations per architecture of each kernel, counted from the launchers' own tables (not from
    ``all_specs``): a launchable configuration missing from the specs makes the check fail."""
    from ..backends.moment_stat import IDS as MOMENT_IDS
    from ..backends.sort_stat import IDS as SORT_IDS
    from ..backends.triton import configs, sigreg_fused, sigreg_passes

    variants = len(sigreg_fused.INPUT_VARIANTS)
    return {
        "sigreg_fused_forward_kernel": len(configs.FORWARD_CONFIGS) * variants * 2,  # D a multiple of 16 or not
        "sigreg_fused_backward_kernel": (len(configs.BACKWARD_CONFIGS) + len(configs.BACKWARD_ALIGNED_CONFIGS))
        * variants,
        "ecf_sums_kernel": 1,
        "ecf_grad_kernel": 2,  # scaled by the statistic's gradient (SIGReg) or not (the ECF means)
        "ecf_stat_kernel": len(sigreg_passes.STAT_CHECKED_POINTS),
        "sort_match_kernel": len(configs.SORT_CONFIGS) * 2,  # quantiles / two-sample
        "sort_stat_kernel": len(configs.STAT_CONFIGS) * len(SORT_IDS),  # one variant per statistic
        "sort_nll_kernel": len(configs.F64_STAT_CONFIGS) * 2,  # with and without alpha's masking
        # one config; Moments at k_max 4 and MAX_ORDER, VCReg, Extended Jarque-Bera; backward per degree (4, 16)
        "moment_stat_kernel": len(MOMENT_IDS) + 1,
        "moment_stat_backward_kernel": 2,
        # one config; the forward with torch's CPU and CUDA division by sqrt(N)
        "visreg_terms_kernel": 2,
        "visreg_terms_backward_kernel": 1,
    }


def _compile_indexed(index: int, capability: int) -> Dict:
    return compile_one(all_specs()[index], capability)


def _ptxas_report(ptx: str, arch: str) -> Dict[str, int]:
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [knobs.nvidia.ptxas.path, "-v", f"--gpu-name={arch}", path, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
    text = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if regs is None or spills is None:
        raise RuntimeError(f"unexpected ptxas output:\n{text}")
    return dict(registers=int(regs.group(1)), spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)))


def ptx_counts(ptx: str) -> Dict[str, int]:
    """Static counts in PTX of warp shuffles (``shfl.sync``) and block barriers (``bar.sync``/``barrier.sync``)."""
    return dict(
        shuffles=len(re.findall(r"\bshfl\.sync\b", ptx)),
        barriers=len(re.findall(r"\b(?:bar|barrier)\.sync\b", ptx)),
    )


def sass_counts(cubin: bytes, elements: int, knots: int = 1) -> Dict[str, object]:
    """Static SASS of a kernel with a knot loop (``cuobjdump -sass``; a loop body counts once), per element of P
    a thread holds: ``sass_per_knot`` the knot loop's body (the largest loop with no loop inside; a backward
    branch closes a loop) over the ``knots`` one iteration walks, ``sass_per_elem`` everything else (the
    first angle's sin/cos with libdevice's never-taken large-argument paths, loads, stores, set-up, an
    unrolled loop's remainder). Blank where cuobjdump is not at hand."""
    from triton import knobs

    tool = os.path.join(os.path.dirname(knobs.nvidia.ptxas.path), "cuobjdump")
    if not os.path.exists(tool):
        return dict(sass_per_elem="", sass_per_knot="")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    return sass_loop_counts(sass, elements, knots)


def sass_loop_counts(sass: str, elements: int, knots: int = 1) -> Dict[str, object]:
    """``sass_counts`` on ``cuobjdump -sass`` text."""
    addresses = []
    loops = []
    for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass):
        addr = int(m.group(1), 16)
        addresses.append(addr)
        branch = re.search(r"\bBRA\b[^;]*?(0x[0-9a-f]+)", m.group(2))
        if branch and int(branch.group(1), 16) < addr:
            loops.append((int(branch.group(1), 16), addr))
    size = lambda lo, hi: sum(lo <= a <= hi for a in addresses)  # noqa: E731
    innermost = [(lo, hi) for lo, hi in loops if not any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in loops)]
    knot = max((size(lo, hi) for lo, hi in innermost), default=0)
    per_elem, per_knot = (len(addresses) - knot) / elements, knot / elements / knots
    return dict(sass_per_elem=round(per_elem, 1), sass_per_knot=round(per_knot, 1))


def compile_spec(spec: CompileSpec, capability: int):
    """The Triton compilation of ``spec`` for sm_``capability``, as the launchers launch it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = spec.kernel.arg_names
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in spec.aligned_pointers}
    return triton.compile(
        ASTSource(spec.kernel, spec.signature, spec.constexprs, attrs),
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": spec.num_warps, **spec.options},
    )


def compile_one(spec: CompileSpec, capability: int) -> Dict:
    row = dict(kernel=spec.kernel.__name__, config=spec.config, variant=spec.variant, arch=f"sm_{capability}")
    start = time.perf_counter()
    try:
        compiled = compile_spec(spec, capability)
        arch = re.search(r"^\.target (\S+)", compiled.asm["ptx"], re.M).group(1)
        row.update(_ptxas_report(compiled.asm["ptx"], arch))
        row.update(ptx_counts(compiled.asm["ptx"]))
        if spec.knot_elements:
            row.update(sass_counts(compiled.asm["cubin"], spec.knot_elements, spec.knots_per_iteration))
        row["shared_bytes"] = int(compiled.metadata.shared)
        row["ok"] = row["spill_stores"] == 0 and row["spill_loads"] == 0 and row["shared_bytes"] <= ARCHS[capability]
        row["error"] = ""
    except Exception as e:  # a compile failure is a result to report, not a crash
        row.update(
            registers="",
            spill_stores="",
            spill_loads="",
            shared_bytes="",
            shuffles="",
            barriers="",
            ok=False,
            error=str(e).splitlines()[0],
        )
    row["compile_s"] = round(time.perf_counter() - start, 2)
    return row


def run_compile_check(capabilities=tuple(ARCHS), jobs: int = 1) -> List[Dict]:
    """Compile every spec for every capability in a fresh Triton cache (so compile_s is real), in
    ``jobs`` processes (each compile is single-threaded: the check scales with the cores)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("compile-check needs the real Triton compiler: unset TRITON_INTERPRET")
    saved = os.environ.get("TRITON_CACHE_DIR")
    work = [(i, cap) for i in range(len(all_specs())) for cap in capabilities]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            if jobs <= 1:
                return [_compile_indexed(i, cap) for i, cap in work]
            # spawned workers inherit the environment (the cache folder) and import the kernels themselves
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
                return list(pool.map(_compile_indexed, *zip(*work)))
        finally:
            if saved is None:
                del os.environ["TRITON_CACHE_DIR"]
            else:
                os.environ["TRITON_CACHE_DIR"] = saved


def extension_report(capabilities=tuple(ARCHS)) -> List[Dict]:
    """ptxas's report (registers, spills, stack, shared memory) for every kernel of the CUDA extension
    source ``csrc/sort_match_cuda.cu``, compiled with nvcc for each architecture as the build does.
    Empty when nvcc or the sources are not here."""
    from torch.utils.cpp_extension import include_paths

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    source = os.path.join(root, "csrc", "sort_match_cuda.cu")
    nvcc = _nvcc()
    if nvcc is None or not os.path.exists(source):
        return []
    includes = [f"-I{p}" for p in include_paths()] + [
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{os.path.dirname(source)}",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cap in capabilities:
            start = time.perf_counter()
            out = subprocess.run(
                [
                    nvcc,
                    "-std=c++20",
                    "-O3",
                    "--cubin",
                    f"-arch=sm_{cap}",
                    "-Xptxas",
                    "-v",
                    *includes,
                    source,
                    "-o",
                    os.path.join(tmp, f"sm_{cap}.cubin"),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                rows.append(dict(kernel="(nvcc failed)", arch=f"sm_{cap}", ok=False, error=out.stderr.strip()[-300:]))
                continue
            rows.extend(_parse_ptxas(out.stderr + out.stdout, f"sm_{cap}", cap))
            for row in rows:
                row.setdefault("compile_s", round(time.perf_counter() - start, 1))  # per nvcc run
    return rows


def _nvcc():
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = os.path.join(home, "bin", "nvcc")
    return candidate if os.path.exists(candidate) else shutil.which("nvcc")


def _parse_ptxas(text: str, arch: str, cap: int) -> List[Dict]:
    rows, current = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for", line)
        if m:
            current = dict(kernel=_kernel_name(m.group(1)), arch=arch)
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            smem = re.search(r"(\d+) bytes smem", line)
            current.update(registers=int(m.group(1)), shared_bytes=int(smem.group(1)) if smem else 0)
    for row in rows:
        row["ok"] = (
            row.get("spill_stores", 0) == 0
            and row.get("spill_loads", 0) == 0
            and row.get("shared_bytes", 0) <= ARCHS[cap]
        )
        row["error"] = ""
    return rows


def _kernel_name(mangled: str) -> str:
    """Readable kernel name: ours with their template arguments, CUB's by their base name."""
    if not shutil.which("c++filt"):
        return mangled
    full = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip()
    full = full.replace("(anonymous namespace)::", "")
    name = full[: full.find("(")] if "(" in full else full
    name = re.sub(r"^void ", "", name)
    if name.startswith("fused_sigreg::"):
        return name[len("fused_sigreg::") :]
    return re.split(r"[<(]", name)[0].split("::")[-1]
