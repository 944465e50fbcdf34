"""Triton kernel bodies (``@triton.jit``), installed as ``fused_sigreg.kernels``.

One module per kernel family (``sigreg_fused``, ``ecf_passes``, ``sort_match``), shared helpers in
``common``; launchers, autograd wiring and dispatch live in ``fused_sigreg.backends.triton``.
"""
