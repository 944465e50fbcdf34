"""fused_sigreg: fast, exact distribution-matching regularisers for JEPA training.

SIGReg (LeJEPA), sliced Wasserstein and VISReg, and RDMReg (Rectified LpJEPA), each as a
function and as a drop-in module, dispatched to the best available backend.
"""

from . import backends as _backends  # noqa: F401  (registers eager, triton, cpu and cuda)
from .dispatch import BackendUnavailableError, available_backends
from .distributed import single_process
from .objectives import lejepa_loss, rectified_lpjepa_loss, visreg_loss
from .ops.rdmreg import RDMReg, rdmreg
from .ops.sigreg import SIGReg, sigreg
from .ops.sliced_wasserstein import SlicedWasserstein, sliced_wasserstein
from .ops.visreg import VISReg, visreg
from .rgg import expected_l0_fraction, gn_unit_variance_sigma, rgn_unit_variance_sigma, sample_rgg
from .slicing import QUADRATURE_PRESETS, lejepa_directions

__version__ = "0.1.0"

__all__ = [
    "sigreg",
    "SIGReg",
    "sliced_wasserstein",
    "SlicedWasserstein",
    "visreg",
    "VISReg",
    "rdmreg",
    "RDMReg",
    "lejepa_loss",
    "visreg_loss",
    "rectified_lpjepa_loss",
    "available_backends",
    "single_process",
    "BackendUnavailableError",
    "QUADRATURE_PRESETS",
    "lejepa_directions",
    "sample_rgg",
    "gn_unit_variance_sigma",
    "rgn_unit_variance_sigma",
    "expected_l0_fraction",
]
