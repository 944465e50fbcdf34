"""The error budgets behind the kernels' numerics choices (``fused_sigreg.tools.numerics``)."""

from fused_sigreg.tools import numerics


def _within_budget(row) -> bool:
    """The bound the kernels' recurrence is held to: 2x direct fp32 cos/sin, plus 1e-6."""
    return row["recurrence_max_abs_error"] <= 2 * row["direct_fp32_max_abs_error"] + 1e-6


def test_angle_addition_meets_the_budget_and_chebyshev_does_not():
    """Why the kernels walk the knots by angle addition (4 FMA slots per knot) and not by the three-term
    Chebyshev recurrence (2): the latter is ~10x off at |p| <= 1, SIGReg's usual range."""
    for t_max, n_points in ((3.0, 17), (5.0, 9)):
        angle = numerics.recurrence_error(50.0, t_max, n_points, samples=20001)
        chebyshev = numerics.recurrence_error(50.0, t_max, n_points, samples=20001, scheme="chebyshev")
        assert all(_within_budget(row) for row in angle)
        assert not _within_budget(chebyshev[0]), chebyshev[0]


def test_knot_walk_comparison_lists_every_way_with_its_cost():
    rows = numerics.knot_walk_comparison(samples=2001)
    assert [r["scheme"] for r in rows] == ["angle_addition", "chebyshev", "hw sin/cos (bound)", "direct fp32 (libm)"]
    assert [r["fma_slots_per_knot"] for r in rows[:3]] == [4, 2, 17]
    hw = rows[2]
    assert isinstance(hw["0 <= |p| <= 1"], float) and hw["1 <= |p| <= 3"] == "-"  # documented on [-pi, pi] only
