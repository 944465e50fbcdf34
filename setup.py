"""Packaging: the Python package, ``kernels/`` installed as ``fused_sigreg.kernels``, and the compiled
extension ``fused_sigreg._C`` from ``csrc/`` (metadata lives in pyproject.toml).

The extension needs torch at build time: install with ``pip install --no-build-isolation -e .``
(``make`` does). Its CPU part is always built; the CUDA part when torch has CUDA and a CUDA toolkit
of the same major version is found (otherwise a warning says why it was left out).

Build variables:
  FUSED_SIGREG_BUILD_CUDA=0|1   force the CUDA sources off / on (default: auto-detect)
  FUSED_SIGREG_BUILD_EXT=0      skip the compiled extension entirely (pure Python, eager fallback)
  FUSED_SIGREG_SANITIZE=address,undefined   instrument the C++ sources with these gcc sanitizers (for
                                `make asan`; the library then loads only under LD_PRELOAD of their runtimes)
  TORCH_CUDA_ARCH_LIST          GPU architectures (default "8.0;9.0")
  CUDA_HOME                     CUDA toolkit root (default: found from nvcc, else /usr/local/cuda)
  MAX_JOBS                      parallel compile jobs
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

PACKAGES = [
    "fused_sigreg",
    "fused_sigreg.ops",
    "fused_sigreg.backends",
    "fused_sigreg.backends.triton",
    "fused_sigreg.backends.extension",
    "fused_sigreg.tools",
    "fused_sigreg.kernels",
]
PACKAGE_DIR = {"fused_sigreg": "fused_sigreg", "fused_sigreg.kernels": "kernels"}


def _log(msg):
    print(f"fused_sigreg setup: {msg}", file=sys.stderr)


def _find_cuda_home():
    """The toolkit root whose lib64/ holds libcudart.so (an nvcc wrapper script on PATH misleads torch)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for root in candidates:
        if glob.glob(os.path.join(root, "lib64", "libcudart.so*")) and os.path.exists(
            os.path.join(root, "bin", "nvcc")
        ):
            return root
    return None


def _nvcc_release(cuda_home):
    """(major, minor) of the toolkit's nvcc, or None when it does not answer."""
    try:
        out = subprocess.run(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True
        ).stdout
    except OSError:
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def why_no_cuda(torch, cuda_home):
    """Why the CUDA sources cannot be built against this torch, or "" when they can."""
    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU build"
    if cuda_home is None:
        return "no CUDA toolkit (nvcc with lib64/libcudart) was found; set CUDA_HOME"
    release = _nvcc_release(cuda_home)
    if release is None:
        return f"nvcc in {cuda_home} did not report its version"
    if release[0] != int(torch.version.cuda.split(".")[0]):
        # torch's extension builder refuses a toolkit of another major version than its own CUDA
        return (
            f"the CUDA toolkit in {cuda_home} is {release[0]}.{release[1]} but torch {torch.__version__} "
            f"was built with CUDA {torch.version.cuda}; install a matching toolkit or set CUDA_HOME to one"
        )
    return ""


def extensions():
    if os.environ.get("FUSED_SIGREG_BUILD_EXT", "1") == "0":
        _log("FUSED_SIGREG_BUILD_EXT=0: no compiled extension (every op runs on eager/triton)")
        return [], {}
    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension reads it
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        _log("torch is not importable at build time (use --no-build-isolation): building without the extension")
        return [], {}

    forced = os.environ.get("FUSED_SIGREG_BUILD_CUDA")
    why_not = why_no_cuda(torch, cuda_home)
    if forced == "1" and why_not:
        raise RuntimeError(f"FUSED_SIGREG_BUILD_CUDA=1 but the CUDA part cannot be built: {why_not}")
    build_cuda = not why_not if forced is None else forced == "1"
    if not build_cuda:
        _log("building the CPU extension only" + ("" if forced == "0" else f" ({why_not})"))

    sources = [
        "csrc/ops.cpp",
        "csrc/sort_match_cpu.cpp",
        "csrc/sort_match_loss.cpp",
        "csrc/sort_stat_cpu.cpp",
        "csrc/sort_nll_cpu.cpp",
        "csrc/moment_stat_cpu.cpp",
        "csrc/sigreg_cpu.cpp",
        "csrc/visreg_terms_cpu.cpp",
    ]
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    link = ["-fopenmp"]
    sanitize = os.environ.get("FUSED_SIGREG_SANITIZE", "")
    if sanitize:
        if not re.fullmatch(r"[a-z]+(,[a-z]+)*", sanitize):
            raise ValueError(
                f"FUSED_SIGREG_SANITIZE must name gcc sanitizers like 'address,undefined', got {sanitize!r}"
            )
        # -O1 and frame pointers keep the reports' stacks readable; any finding stops the process
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}", "-fno-sanitize-recover=all"] + cxx[1:]
        link = link + [f"-fsanitize={sanitize}"]
        _log(f"instrumenting the C++ sources with -fsanitize={sanitize}")
    if build_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        _log(f"building CPU + CUDA extension for {os.environ['TORCH_CUDA_ARCH_LIST']} with {cuda_home}")
        ext = CUDAExtension(
            "fused_sigreg._C",
            sources + ["csrc/sort_match_cuda.cu"],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20", "-lineinfo"]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension("fused_sigreg._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    return [ext], {"build_ext": BuildExtension}


if __name__ == "__main__":  # pip and setuptools' build backend run this file as __main__; tests import it
    ext_modules, cmdclass = extensions()
    setup(packages=PACKAGES, package_dir=PACKAGE_DIR, ext_modules=ext_modules, cmdclass=cmdclass)
