"""lejepa's EDF-family statistics on the extension's ``fused_sigreg::sort_stat`` (CPU), in its (S, N) layout."""

from __future__ import annotations

import torch

from ..sort_match import slice_rows
from ..sort_stat import make_stages


def _extension_stat(samples, statistic, eps, m, weights, closed):
    value, grad = torch.ops.fused_sigreg.sort_stat(slice_rows(samples), statistic, eps, m, weights, closed)
    lead, (n, k) = samples.shape[:-2], samples.shape[-2:]
    return value.reshape(*lead, k), grad.reshape(*lead, k, n).transpose(-1, -2)


STAGES = make_stages(_extension_stat)  # what the dispatcher's cpu backend calls
