"""lejepa's moment-family statistics on the extension's ``fused_sigreg::moment_stat`` (CPU)."""

from __future__ import annotations

import torch

from ..moment_stat import make_stages

STAGES = make_stages(torch.ops.fused_sigreg.moment_stat)  # what the dispatcher's cpu backend calls
