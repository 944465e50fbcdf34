"""The Epps–Pulley quadrature as the official modules keep it: float32 buffers that checkpoints carry.

lejepa, lightly, stable-pretraining and the VISReg repository register ``t``, ``phi`` and ``weights``
(jepa-science ``t`` and ``weights``): knots ``linspace(0, t_max, n)``, the N(0,1) characteristic
function at them and the folded trapezoid weights times it. The fused ops rebuild that rule from
``(t_max, n)``, so the buffers exist for the state_dict; a loaded rule is checked against the formula
(and its ``t_max``, the last knot, followed) instead of being silently ignored.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..slicing import epps_pulley_quadrature

# Loaded knots and weights are float32: they equal a rebuilt rule to float32 rounding.
RULE_RTOL = 1e-6


class RuleBuffers(nn.Module):
    """Base of the compat modules holding the rule as buffers; ``t_max`` follows a loaded checkpoint."""

    def register_rule(self, t_max: float, n_points: int, names: Sequence[str] = ("t", "phi", "weights")) -> None:
        self.t_max, self.rule_points, self.rule_names = float(t_max), int(n_points), tuple(names)
        quad = epps_pulley_quadrature(self.t_max, self.rule_points)
        for name in self.rule_names:
            self.register_buffer(name, getattr(quad, name))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        t = state_dict.get(prefix + "t")
        if isinstance(t, torch.Tensor) and t.shape == self.t.shape:
            # a module moved to 16 bits (.to(torch.bfloat16), precision="bf16-true") saves the rule rounded
            # to that dtype: compare in it, and keep this module's t_max when it rounds to the saved one
            t_max = float(t[-1])
            if float(torch.tensor(self.t_max, dtype=t.dtype)) == t_max:
                t_max = self.t_max
            rule = epps_pulley_quadrature(t_max, self.rule_points)
            for name in self.rule_names:
                want, got = getattr(rule, name), state_dict.get(prefix + name)
                if isinstance(got, torch.Tensor) and got.shape == want.shape:
                    rounded = want.to(got.dtype).double() if got.is_floating_point() else want.double()
                    if not torch.allclose(got.detach().cpu().double(), rounded, rtol=RULE_RTOL, atol=0):
                        raise ValueError(
                            f"{prefix}{name} in the checkpoint is not the trapezoid rule with t_max={t_max:g} and "
                            f"{self.rule_points} knots; {type(self).__name__} computes no other"
                        )
            if abs(t_max - self.t_max) > RULE_RTOL * self.t_max:
                self.t_max = t_max
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def matmul_result_dtype(x: torch.Tensor, default: torch.dtype) -> torch.dtype:
    """The dtype of an official statistic whose last step is a matmul with the rule's weights: under autocast
    the autocast dtype (autocast casts that matmul; float64 is never cast), else ``default``. The fused
    ops accumulate in float32 either way; only the result is rounded to the official dtype."""
    device = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return default
