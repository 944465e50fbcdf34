import os
import time

import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. The flag must be set
# before triton is first imported (triton.language's own helpers are decorated at import), so it is
# set here for the whole session; only an explicit backend="triton" uses the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fused_sigreg import dispatch  # noqa: E402
from helpers import ECOSYSTEM, GOLDEN, GPU, TRITON_DEVICE  # noqa: E402

pytest_plugins = ["per_test_timeout"]  # FUSED_SIGREG_TEST_TIMEOUT: make gpu's limit per test


def _deadline():
    """FUSED_SIGREG_TEST_DEADLINE (seconds since the epoch), set by `make gpu` under GPU_BUDGET."""
    value = os.environ.get("FUSED_SIGREG_TEST_DEADLINE", "")
    try:
        return float(value) if value else None
    except ValueError:
        raise pytest.UsageError(
            f"FUSED_SIGREG_TEST_DEADLINE must be seconds since the epoch (a number), got {value!r}"
        ) from None


DEADLINE = _deadline()


def pytest_runtest_setup(item):
    # A suite run under a time budget skips, with the reason, what it has no time left for, so that
    # it still ends with its summary and junit file instead of being killed.
    if DEADLINE is not None and time.time() >= DEADLINE:
        pytest.skip("not run: the time budget ran out (FUSED_SIGREG_TEST_DEADLINE, set by make gpu's GPU_BUDGET)")


def _load_golden(path):
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"golden data missing at {path} (set FUSED_SIGREG_GOLDEN)")
        pytest.skip(f"golden data not found at {path} (set FUSED_SIGREG_GOLDEN)")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def golden():
    return _load_golden(GOLDEN)


@pytest.fixture(scope="session")
def ecosystem():
    """The real packages' values and gradients, ``[source][class] -> [case]`` (ECOSYSTEM.md beside it)."""
    return _load_golden(ECOSYSTEM)


@pytest.fixture
def rng():
    """Fresh random inputs each run; the seed is printed on failure for reproduction."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def triton_device():
    """The device Triton tests put their tensors on (checks the interpreter is on without a GPU)."""
    assert GPU or os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET=1 without a GPU"
    return TRITON_DEVICE


@pytest.fixture
def ieee_matmul():
    """fp32 matmuls and Triton dots in ieee precision inside the test (fp32 parity is judged that way; on a
    GPU cuBLAS and the kernels honour the user's tf32 setting, which the tf32 tests set themselves)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def registry():
    """A copy of the backend registry that every dispatch goes through during the test; the test may
    register, replace or break backends in it without touching the package's own registry."""
    with dispatch.use_registry(dispatch.REGISTRY.copy()) as reg:
        yield reg
