"""Loads the compiled extension ``fused_sigreg._C`` (ops from ``csrc/``, schemas in ``csrc/ops.cpp``) if it was built.

Without it everything still works on the other backends; importing warns once.
"""

from __future__ import annotations

import warnings

import torch

try:
    from ... import _C  # noqa: F401  (loading the library registers the fused_sigreg::* ops)

    _LOAD_ERROR = None
except ImportError as e:  # not built (FUSED_SIGREG_BUILD_EXT=0, no compiler) or built for another torch
    _LOAD_ERROR = str(e)
    warnings.warn(
        f"fused_sigreg: the compiled extension is not available ({e}); the 'cpu' and 'cuda' backends "
        "are off and their ops run on eager",
        RuntimeWarning,
        stacklevel=2,
    )


if _LOAD_ERROR is None:  # output shapes for fake tensors, which torch.compile and opcheck trace with

    @torch.library.register_fake("fused_sigreg::sort_match")
    def _(proj, target):
        return proj.new_empty((proj.shape[0],)), proj.new_empty(proj.shape)

    @torch.library.register_fake("fused_sigreg::segmented_sort")
    def _(values):
        return torch.empty_like(values), values.new_empty(values.shape, dtype=torch.int32)

    @torch.library.register_fake("fused_sigreg::ecf_sums")
    def _(proj, delta, n_points):
        return proj.new_empty((proj.shape[0], 2, n_points, proj.shape[2]))

    @torch.library.register_fake("fused_sigreg::ecf_grad")
    def _(proj, coef, delta):
        return torch.empty_like(proj)

    @torch.library.register_fake("fused_sigreg::ecf_grad_")
    def _(proj, coef, delta):
        return None


def available():
    if _LOAD_ERROR is None:
        return True, ""
    return False, f"the compiled extension is not built or does not load: {_LOAD_ERROR}"


# Fixed once the library is loaded; a plain dict keeps the lookup traceable by torch.compile.
_KERNELS = {
    (op, key): _LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_sigreg::{op}", key)
    for op in ("sort_match", "segmented_sort", "ecf_sums", "ecf_grad", "ecf_grad_")
    for key in ("CPU", "CUDA")
}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``fused_sigreg::<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return _KERNELS.get((op, dispatch_key), False)
