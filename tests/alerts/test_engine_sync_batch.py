"""AlertEngine.sync loads the zones of one read with ZoneIndex.upsert_many and keeps its per-zone
error handling: a zone the index refuses (or with a bad schedule, kind or thresholds) is logged and
skipped, every other zone of the same read loads with its metadata; a zone read twice loads its
latest row; a deleted zone leaves. In memory, no database."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.memory_repository import MemoryEngineRepository
from tagwatch.alerts.ports import SubjectRow, ZoneRow

CURFEW = {"weekly": [{"start": "19:00", "end": "07:00"}]}


def _square(lon: float, lat: float, d: float = 0.0004) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _zone(zone_id: int, revision: int, **changes: Any) -> ZoneRow:
    row = ZoneRow(
        zone_id=zone_id,
        kind="exclusion",
        geometry=_square(18.42 + 0.01 * zone_id, -33.92),
        radius_m=None,
        buffer_m=100.0,
        subject_id=1,
        group=None,
        victim_subject_id=None,
        schedule=None,
        thresholds=None,
        name=f"zone {zone_id}",
        deleted=False,
        revision=revision,
    )
    return replace(row, **changes)


def test_sync_loads_a_read_in_one_batch_and_skips_only_the_bad_zones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unclosed = _square(18.5, -33.9)
    unclosed["coordinates"][0] = unclosed["coordinates"][0][:-1]
    repo = MemoryEngineRepository(
        subjects=[SubjectRow(1, "Africa/Johannesburg", (), "wc", None, 1)],
        zones=[
            _zone(1, 2),
            _zone(2, 3, geometry=unclosed),  # refused by the index
            _zone(3, 4, kind="curfew", schedule=CURFEW, buffer_m=None),
            _zone(
                4,
                5,
                kind="curfew",
                schedule={"weekly": [{"start": "25:00", "end": "07:00"}]},
                buffer_m=None,
            ),
            _zone(5, 6, thresholds={"no_such_threshold": 1}),
            _zone(
                6,
                7,
                kind="inclusion",
                geometry={"type": "Point", "coordinates": [18.4, -33.9]},
                radius_m=500.0,
                buffer_m=None,
            ),
            _zone(7, 8, kind="no such kind"),
            _zone(8, 9, subject_id=None, group="region:wc"),
            _zone(1, 10, buffer_m=300.0),  # zone 1 again in the same read: the later row wins
        ],
    )
    engine = AlertEngine()
    with caplog.at_level(logging.ERROR, logger="tagwatch.alerts"):
        engine.sync(repo)
    assert set(engine.metas) == {1, 3, 6, 8}
    assert engine.metas[1].buffer_m == 300.0
    assert {1, 3, 6, 8} <= {z.zone_id for z in engine.index.zones()}
    assert 2 not in engine.index and 4 not in engine.index and 7 not in engine.index
    assert engine.curfews[1] == {3}
    assert set(engine.schedules) == {3}
    refused = {int(r.getMessage().split()[1]) for r in caplog.records if "not loaded" in r.message}
    assert refused == {2, 4, 5, 7}
    assert "not closed" in next(r.message for r in caplog.records if "zone 2 " in r.message)
    assert engine.revision == 10

    # The next read: a deletion, a fix of the refused zone, a change of a loaded one.
    repo.zones.extend(
        [
            _zone(3, 11, kind="curfew", schedule=CURFEW, buffer_m=None, deleted=True),
            _zone(2, 12),
            _zone(6, 13, kind="inclusion", buffer_m=None),
        ]
    )
    engine.sync(repo)
    assert set(engine.metas) == {1, 2, 6, 8}
    assert 3 not in engine.index and 2 in engine.index
    assert engine.curfews[1] == set()
    assert engine.schedules == {}
