"""A per-test time limit for runs on a lent GPU: FUSED_SIGREG_TEST_TIMEOUT=S fails any test whose call
takes longer than S seconds (TimeoutError naming the variable), so that one hung or slow test cannot eat
a lease; unset or 0, nothing changes. Loaded by conftest.py (``pytest_plugins``); SIGALRM, so the main
thread of each (xdist) process, on Linux. A test stuck inside one C call fails when the call returns."""

import os
import signal

import pytest


def _limit() -> float:
    value = os.environ.get("FUSED_SIGREG_TEST_TIMEOUT", "")
    try:
        return float(value) if value else 0.0
    except ValueError:
        raise pytest.UsageError(f"FUSED_SIGREG_TEST_TIMEOUT must be a number of seconds, got {value!r}") from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    limit = _limit()
    if limit <= 0:
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{item.nodeid} ran past FUSED_SIGREG_TEST_TIMEOUT={limit:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
