"""Triton kernel bodies (``@triton.jit``), installed as ``fused_sigreg.kernels``.

One module per kernel family (``sigreg_ecf``, ``sort_match``); launchers, autograd wiring and
dispatch live in ``fused_sigreg.backends.triton``.
"""
