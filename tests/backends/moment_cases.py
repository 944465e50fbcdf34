"""Cases shared by the moment-statistic tests of both backends (test_extension_moment_stat.py,
test_triton_moment_stat.py): every statistic, Moments at several k_max, and the float64 judge."""

import torch

from fused_sigreg import univariate
from fused_sigreg.ops import univariate as fused
from helpers import fp32_budget, rel_err, value_and_grad

# (name, options): Moments at lejepa's default, the smallest, an odd and the largest k_max the ops take
CASES = [
    ("moments", {}),
    ("moments", dict(k_max=1)),
    ("moments", dict(k_max=7)),
    ("moments", dict(k_max=16)),
    ("vcreg", {}),
    ("extended_jarque_bera", {}),
]
IDS = [name + "".join(f"-{v}" for v in opts.values()) for name, opts in CASES]


def check_against_float64(name, opts, x, rng, backend, device="cpu"):
    """fp32 fused vs the float64 reference on the same samples; budget 1e-5, or 4x the fp32 reference's
    own error where the statistic's conditioning puts that higher (fp32_budget)."""
    weight = torch.randn(x.shape[:-2] + x.shape[-1:], generator=rng, dtype=torch.float64)
    value, grad = value_and_grad(
        lambda v: getattr(fused, name)(v, **opts, backend=backend), x.to(device), weight.float().to(device)
    )
    reference = lambda v: getattr(univariate, name)(v, **opts)
    ref64, grad64 = value_and_grad(reference, x.double(), weight)
    ref32, grad32 = value_and_grad(reference, x, weight.float())
    assert value.dtype == torch.float32 and value.shape == ref64.shape
    assert rel_err(value.cpu(), ref64) <= fp32_budget(ref32, ref64)
    assert rel_err(grad.cpu(), grad64) <= fp32_budget(grad32, grad64)
