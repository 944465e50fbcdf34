import os
import pathlib

import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. The flag must be set
# before triton is first imported (triton.language's own helpers are decorated at import), so it is
# set here for the whole session; only an explicit backend="triton" uses the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(os.environ.get("FUSED_SIGREG_GOLDEN", REPO.parent / "shared" / "golden" / "reference_cases.pt"))


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.exists():
        if os.environ.get("CI"):
            pytest.fail(f"golden data missing at {GOLDEN} (set FUSED_SIGREG_GOLDEN)")
        pytest.skip(f"golden data not found at {GOLDEN} (set FUSED_SIGREG_GOLDEN)")
    return torch.load(GOLDEN)


@pytest.fixture
def rng():
    """Fresh random inputs each run; the seed is printed on failure for reproduction."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, inf when anything is non-finite (NaN never passes)."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
