"""The CPU timing loop of ``fused_sigreg.tools.bench``: how many calls a row's numbers come from (on a
fake clock, so nothing here depends on this machine's speed)."""

import itertools

import pytest

from fused_sigreg.tools import bench
from fused_sigreg.tools.problems import Shape, make_problem


@pytest.mark.parametrize("tick_ms,want", [(1.5, 34), (0.001, bench.MAX_CPU_REPEATS), (60.0, 3)])
def test_short_calls_are_timed_until_the_minimum_is_held(monkeypatch, tick_ms, want):
    """Each perf_counter read advances the clock one tick, so a fwd+bwd sample is two ticks: at 1.5 ms the
    loop times 34 calls (102 ms), at 1 us it stops at MAX_CPU_REPEATS, and a long call takes ``repeats``."""
    clock = itertools.count()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock) * tick_ms / 1e3)
    problem = make_problem("sliced_wasserstein", Shape(1, 8, 4, 3))
    calls = []
    real_loss = problem.loss
    monkeypatch.setattr(problem, "loss", lambda x, backend: calls.append(1) or real_loss(x, backend), raising=False)
    phases = bench.time_phases(problem, "eager", warmup=1, repeats=3)
    assert len(calls) == 1 + want
    assert phases["fwd+bwd"]["median"] == pytest.approx(2 * tick_ms)
