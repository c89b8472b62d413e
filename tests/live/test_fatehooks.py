"""The conntrack lookup budget of live/fatehooks.py (no kernel needed)."""

from __future__ import annotations

from ruletrace.live.fatehooks import Budget


def test_budget_allows_n_a_second_and_counts_the_rest():
    t = [100.0]
    b = Budget(3, clock=lambda: t[0])
    assert [b.take() for _ in range(5)] == [True, True, True, False, False]
    t[0] += 0.99
    assert not b.take()
    t[0] += 0.02  # a new window: 1.01 s after the first take
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert b.refused == 4
