"""The rule core and its default thresholds on the whole scenario library, without the platform:
every expected alert, no false one, and far fewer than the naive tracker."""

from __future__ import annotations

from tagwatch.simulators.offline_scoring import score_offline
from tagwatch.simulators.scenario import load_library
from tagwatch.simulators.scoring import format_scorecards


def test_the_library_scores_clean_offline() -> None:
    cards, naive = score_offline(load_library())
    table = format_scorecards(cards, naive)
    assert all(not c.missed for c in cards), table
    assert sum(len(c.false) for c in cards) <= 0.1 * sum(len(c.false) for c in naive), table
    assert all(not c.slow for c in cards), table
    quiet = {"compliant-day", "drift-at-home"}
    assert all(c.raised == 0 for c in cards if c.scenario in quiet), table
