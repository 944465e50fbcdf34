"""SWD, VISReg and RDMReg stages on the extension's ``fused_sigreg::sort_match`` (CPU and CUDA)."""

from __future__ import annotations

import torch

from ..sort_match import make_stages, slice_rows


def _extension_match(proj, target):
    return torch.ops.fused_sigreg.sort_match(proj, target)


STAGES = make_stages(_extension_match, slice_rows)  # what the dispatcher's cpu and cuda backends call
