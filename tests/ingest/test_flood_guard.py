"""The flood guard quarantines a sender past its refused-input budget, for the rest of its minute,
and never a sender that refuses nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tagwatch.ingest.flood_guard import WINDOW_S, FloodGuard


def test_quarantine_starts_past_the_budget_and_ends_with_the_minute():
    guard = FloodGuard(refused_per_minute=1000)
    guard.record("tag-1", 500, now=0.0)
    guard.record("tag-1", 500, now=1.0)
    assert not guard.quarantined("tag-1", 2.0)  # exactly the budget: still decoded
    guard.record("tag-1", 1, now=2.0)
    assert guard.quarantined("tag-1", 3.0)
    assert not guard.quarantined("tag-2", 3.0)
    assert guard.quarantined("tag-1", WINDOW_S - 0.1)
    assert not guard.quarantined("tag-1", WINDOW_S)  # a new minute, a new budget


@given(st.lists(st.tuples(st.floats(0, 600), st.integers(0, 0)), max_size=200))
def test_a_sender_that_refuses_nothing_is_never_quarantined(events):
    guard = FloodGuard(refused_per_minute=1)
    for now, refused in sorted(events):
        guard.record("honest", refused, now)
        assert not guard.quarantined("honest", now)


@given(st.lists(st.integers(1, 600), min_size=1, max_size=50), st.integers(1, 5000))
def test_quarantined_exactly_when_the_minute_total_passes_the_budget(counts, budget):
    guard = FloodGuard(refused_per_minute=budget)
    total = 0
    for i, refused in enumerate(counts):
        guard.record("s", refused, now=float(i) * 0.1)
        total += refused
        assert guard.quarantined("s", float(i) * 0.1) == (total > budget)
