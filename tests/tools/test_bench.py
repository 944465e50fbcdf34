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


@pytest.mark.parametrize("second_ms,kept", [(0.5, True), (2.0, False)])
def test_a_second_round_replaces_the_first_only_when_faster(monkeypatch, second_ms, kept):
    """The sweep's second round on a CPU: a row timed at 1 ms per phase keeps its numbers unless the second
    round's median fwd+bwd is lower, and then takes all three phases from it."""
    problem = make_problem("sliced_wasserstein", Shape(1, 8, 4, 3))
    row = {"status": "ok", "fwd_ms_median": 1.0, "bwd_ms_median": 1.0, "fwd+bwd_ms_median": 2.0}
    clock = itertools.count()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock) * second_ms / 1e3)
    assert bench.retime(problem, "eager", 1, 3, row) is kept
    want = second_ms if kept else 1.0
    assert row["fwd_ms_median"] == pytest.approx(want) and row["fwd+bwd_ms_median"] == pytest.approx(2 * want)
    assert ("fwd_ms_p20" in row) is kept


def test_long_and_failed_rows_are_not_timed_again(monkeypatch):
    monkeypatch.setattr(bench, "time_phases", lambda *a: pytest.fail("timed again"))
    problem = make_problem("sliced_wasserstein", Shape(1, 8, 4, 3))
    assert not bench.retime(problem, "eager", 1, 3, {"status": "ok", "fwd+bwd_ms_median": bench.MAX_RETIMED_MS + 1})
    assert not bench.retime(problem, "eager", 1, 3, {"status": "OOM"})
