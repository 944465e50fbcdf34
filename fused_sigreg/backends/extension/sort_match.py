"""SWD, VISReg and RDMReg stages on the extension's ``fused_sigreg::sort_match`` (CPU and CUDA); VISReg's
terms on the extension's ``visreg_terms`` ops on CPU and on their Triton twins on CUDA."""

from __future__ import annotations

import torch

from ..sort_match import center_norm, make_stages, slice_rows


def _center_norm(z, mu):
    # torch reduces a single column's norm in another order than a column of a wider row (csrc/ops.cpp)
    if z.shape[-1] == 1:
        return center_norm(z, mu)
    return torch.ops.fused_sigreg.center_norm(z, mu)


_TERMS = {"cpu": (torch.ops.fused_sigreg.visreg_terms, torch.ops.fused_sigreg.visreg_terms_backward, _center_norm)}
try:  # triton is a runtime dependency wherever CUDA is; without it VISReg's terms on CUDA are the reference's
    from ..triton.visreg_terms import OPS as _TRITON_TERMS

    _TERMS["cuda"] = _TRITON_TERMS
except ImportError:
    pass


def _extension_match(proj, target):
    return torch.ops.fused_sigreg.sort_match(proj, target)


def _terms_for(z):
    return _TERMS.get(z.device.type)


# SWD's and RDMReg's forward and backward, each one op (csrc/sort_match_loss.cpp)
_LOSS_OPS = (torch.ops.fused_sigreg.sort_match_loss, torch.ops.fused_sigreg.sort_match_loss_backward)

# what the dispatcher's cpu and cuda backends call
STAGES = make_stages(_extension_match, slice_rows, _terms_for, _LOSS_OPS, host_blas=True)
