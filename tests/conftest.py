import os
import pathlib

import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. The flag must be set
# before triton is first imported (triton.language's own helpers are decorated at import), so it is
# set here for the whole session; only an explicit backend="triton" uses the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fused_sigreg as fs  # noqa: E402

GPU = torch.cuda.is_available()
# Where the Triton kernels run: the GPU, else Triton's interpreter on CPU tensors.
TRITON_DEVICE = "cuda" if GPU else "cpu"

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


@pytest.fixture
def triton_device():
    """The device Triton tests put their tensors on (checks the interpreter is on without a GPU)."""
    assert GPU or os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET=1 without a GPU"
    return TRITON_DEVICE


def hard_values(rng: torch.Generator, *shape) -> torch.Tensor:
    """Sort inputs with ties, +-0, +-inf and ordinary values mixed."""
    v = torch.randint(-3, 4, shape, generator=rng).float() * 0.5
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf")])
    pick = torch.randint(0, 4, shape, generator=rng)
    return torch.where(torch.rand(shape, generator=rng) < 0.2, specials[pick], v)


# The one-sample sort ops by name, with explicit directions (D, K).
SORT_OPS = {
    "swd": lambda x, a, **kw: fs.sliced_wasserstein(x, directions=a, **kw),
    "swd_clamped": lambda x, a, **kw: fs.sliced_wasserstein(x, directions=a, quantile_clamp=1e-4, **kw),
    "visreg": lambda x, a, **kw: fs.visreg(x, directions=a, **kw),
}
