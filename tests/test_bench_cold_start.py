"""`tagwatch bench cold-start` with a tiny catalogue: a real `tagwatch ingest` process started twice
on private services, first building its index from the tables (and saving the snapshot from a
forked child), then from that snapshot after a zone was drawn and a subject moved while it was
down; each start commits the probe's exclusion-zone entry from fixes the broker kept meanwhile."""

from __future__ import annotations

import pytest

from tagwatch.bench.cold_start import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cold_start_evaluates_from_the_tables_then_from_the_saved_snapshot():
    lines: list[str] = []
    figures = run(subjects=300, global_zones=10, echo=lines.append)
    assert figures["snapshot_used"] == 1.0, "\n".join(lines)
    assert figures["snapshot_mb"] > 0
    for start in ("tables", "snapshot"):
        assert 0 < figures[f"{start}_ready_s"] < figures[f"{start}_first_batch_s"]
    assert any("from the snapshot" in line for line in lines)
