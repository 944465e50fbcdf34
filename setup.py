"""Packaging: the Python package plus ``kernels/`` installed as ``fused_sigreg.kernels``.

Metadata lives in pyproject.toml. The compiled extension in ``csrc/`` hooks in here
(optional CUDA build, arch list from TORCH_CUDA_ARCH_LIST) once it has sources.
"""
from setuptools import setup

setup(
    packages=["fused_sigreg", "fused_sigreg.ops", "fused_sigreg.kernels"],
    package_dir={"fused_sigreg": "fused_sigreg", "fused_sigreg.kernels": "kernels"},
)
