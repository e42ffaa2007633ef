"""`tagwatch bench handoff` runs both hand-offs, checks order, and gives back the process's CPUs."""

from __future__ import annotations

from tagwatch.bench import handoff
from tagwatch.ingest import affinity


def test_bench_handoff_quick() -> None:
    before = affinity.allowed_cpus()
    lines: list[str] = []
    figures = handoff.run(messages=5_000, rounds=1, echo=lines.append)
    assert figures["queue_us_per_message"] > 0
    assert figures["inbox_us_per_message"] > 0
    assert any("Inbox" in line for line in lines)
    assert affinity.allowed_cpus() == before  # the pin is undone
