"""Triton kernel bodies (``@triton.jit``), installed as ``fused_sigreg.kernels``.

One module per kernel; launchers, autograd wiring and dispatch live in ``fused_sigreg.ops``.
No kernels ship yet: every op runs on the eager reference (see ``fused_sigreg.available_backends()``).
"""
