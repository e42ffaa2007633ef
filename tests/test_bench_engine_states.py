"""`tagwatch bench engine-states` with tiny numbers: alternating runs of the engine's batch path on
a private database, the second keeping decoded states (every fix after a subject's first is a
kept state, none read back) and both printing their figures."""

from __future__ import annotations

import pytest

from tagwatch.bench.engine_states import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_engine_states_bench_runs_off_then_on_with_every_later_fix_kept():
    lines: list[str] = []
    figures = run(subjects=200, batch=50, rounds=3, pairs=1, echo=lines.append)
    assert figures["off_fixes_per_s"] > 0 and figures["on_fixes_per_s"] > 0
    off, on = (line for line in lines if "kept states" in line)
    assert "hits 0, misses 0" in off
    assert "hits 400, misses 200" in on, on
    assert "medians" in lines[-1]
