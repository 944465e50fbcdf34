"""lejepa's moment-family statistics on the extension's ``fused_sigreg::moment_stat`` and
``moment_stat_backward`` (CPU)."""

from __future__ import annotations

import torch

from ..moment_stat import make_stages

# what the dispatcher's cpu backend calls
STAGES = make_stages(torch.ops.fused_sigreg.moment_stat, torch.ops.fused_sigreg.moment_stat_backward)
