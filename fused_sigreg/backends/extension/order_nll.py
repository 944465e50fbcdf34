"""lejepa's NLL on the extension's ``fused_sigreg::sort_nll`` (CPU), in its (S, N) layout."""

from __future__ import annotations

import torch

from ..order_nll import make_stage
from ..sort_match import slice_rows


def _extension_nll(samples, constant, cutoffs, closed):
    lead, (n, k) = samples.shape[:-2], samples.shape[-2:]
    outputs = torch.ops.fused_sigreg.sort_nll(slice_rows(samples), constant, cutoffs, closed)
    # (S, N) rows back to (..., N, K) columns: views, which the backward's gather reads as they are
    return tuple(t.reshape(*lead, k, n).transpose(-1, -2) for t in outputs)


STAGES = make_stage(_extension_nll)  # what the dispatcher's cpu backend calls
