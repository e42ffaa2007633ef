"""A district drawn for many subjects is read once: the engine's zone read decodes each distinct
geometry text once and hands its zones one object, and the index prepares that object once
(geofence.index keys an object once per batch). The zones still come out whole and separate."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts.engine import AlertEngine
from tagwatch.geofence import FixBatch
from tagwatch.geofence.batch import INSIDE, OUTSIDE
from tagwatch.geofence.schedule import Schedule
from tagwatch.store.engine_repository import PgEngineRepository, decode_json
from tests.support import fresh_id

pytestmark = pytest.mark.integration

DISTRICT = {
    "type": "Polygon",
    "coordinates": [
        [[18.40, -33.95], [18.50, -33.95], [18.50, -33.85], [18.40, -33.85], [18.40, -33.95]]
    ],
}


def _three_subjects(conn: psycopg.Connection, prefix: str) -> tuple[list[int], int]:
    """Three subjects in one region (Johannesburg time), and the zones' revision before them:
    what the engine reads from."""
    conn.execute("INSERT INTO regions (id, name) VALUES ('za-wc', 'WC') ON CONFLICT DO NOTHING")
    subjects = [
        int(
            conn.execute(
                "INSERT INTO subjects (name, region_id, timezone) VALUES"
                " (%s, 'za-wc', 'Africa/Johannesburg') RETURNING id",
                (fresh_id(prefix),),
            ).fetchone()[0]
        )
        for _ in range(3)
    ]
    (start,) = conn.execute("SELECT coalesce(max(revision), 0) FROM zones").fetchone()
    return subjects, int(start)


def test_copies_of_a_geometry_share_one_object_and_each_zone_works(settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        subjects, start = _three_subjects(conn, "district")
        zones = [
            int(
                conn.execute(
                    "INSERT INTO zones (name, kind, geometry, subject_id)"
                    " VALUES ('district', 'inclusion', %s, %s) RETURNING id",
                    (Jsonb(DISTRICT), sid),
                ).fetchone()[0]
            )
            for sid in subjects
        ]
        other = {**DISTRICT, "coordinates": [[[x + 1, y] for x, y in DISTRICT["coordinates"][0]]]}
        (moved,) = conn.execute(
            "INSERT INTO zones (name, kind, geometry, subject_id)"
            " VALUES ('moved', 'inclusion', %s, %s) RETURNING id",
            (Jsonb(other), subjects[0]),
        ).fetchone()
    with psycopg.connect(settings.database_url) as conn:
        rows = {z.zone_id: z for z in PgEngineRepository(conn).zones_since(start)}
        engine = AlertEngine()
        engine.sync(PgEngineRepository(conn))
    mine = [rows[z] for z in zones]
    assert mine[0].geometry == DISTRICT
    assert all(z.geometry is mine[0].geometry for z in mine)  # one object for the three
    assert rows[moved].geometry is not mine[0].geometry
    assert rows[moved].geometry["coordinates"][0][0] == [19.40, -33.95]
    # Every subject's copy is its own zone in the index: inside at the centre, outside 15 km east.
    for sid, zid in zip(subjects, zones, strict=True):
        batch = FixBatch(
            subject_id=[sid, sid],
            lon=[18.45, 18.60],
            lat=[-33.90, -33.90],
            acc=[5.0, 5.0],
            time=[1.8e9, 1.8e9],
        )
        result = engine.index.classify(batch)
        states = {
            (int(f), int(z)): int(st)
            for f, z, st in zip(result.fix_index, result.zone_id, result.state, strict=True)
        }
        assert states[(0, zid)] == INSIDE
        assert states[(1, zid)] == OUTSIDE


WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
CURFEW = {"weekly": [{"days": WEEKDAYS, "start": "19:00", "end": "07:00"}]}
WEEKENDS = {"weekly": [{"days": ["sat", "sun"], "start": "00:00", "end": "23:59"}]}
HOME = {"type": "Point", "coordinates": [18.45, -33.90]}


def test_a_schedule_shared_by_many_curfews_is_parsed_once_and_each_zone_keeps_it(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        subjects, start = _three_subjects(conn, "curfew")
        zones = [
            int(
                conn.execute(
                    "INSERT INTO zones (name, kind, geometry, radius_m, subject_id, schedule)"
                    " VALUES ('home', 'curfew', %s, 80, %s, %s) RETURNING id",
                    (Jsonb(HOME), sid, Jsonb(schedule)),
                ).fetchone()[0]
            )
            for sid, schedule in zip(subjects, (CURFEW, CURFEW, WEEKENDS), strict=True)
        ]
    with psycopg.connect(settings.database_url) as conn:
        rows = {z.zone_id: z for z in PgEngineRepository(conn).zones_since(start)}
        engine = AlertEngine()
        engine.sync(PgEngineRepository(conn))
    assert rows[zones[0]].schedule == CURFEW
    assert rows[zones[0]].schedule is rows[zones[1]].schedule  # one decoded object
    assert rows[zones[2]].schedule == WEEKENDS
    parsed = [engine.schedules[z][0] for z in zones]
    assert parsed[0] is parsed[1]  # parsed once
    assert parsed[0] == Schedule.from_json(CURFEW)
    assert parsed[2] == Schedule.from_json(WEEKENDS)
    # Each zone is active when its own schedule says: Wednesday 2026-12-09 at 21:00 and at
    # noon, Johannesburg time (UTC+2), at home.
    evening, noon = 1_796_842_800.0, 1_796_810_400.0
    for sid, zid, expected in zip(subjects, zones, (True, True, False), strict=True):
        batch = FixBatch(
            subject_id=[sid, sid],
            lon=[18.45, 18.45],
            lat=[-33.90, -33.90],
            acc=[5.0, 5.0],
            time=[evening, noon],
        )
        result = engine.index.classify(batch)
        active = {
            int(f): bool(a)
            for f, z, a in zip(result.fix_index, result.zone_id, result.active, strict=True)
            if int(z) == zid
        }
        assert active == {0: expected, 1: False}, (zid, active)


def test_json_the_database_holds_beyond_float64_decodes_as_the_standard_library_does():
    # jsonb keeps numbers as numeric: 1e400 is a valid jsonb number, inf for Python's json
    assert decode_json("[1e400, -33.9]") == [float("inf"), -33.9]
    assert decode_json('{"a": [18.123456789012345, 1]}') == {"a": [18.123456789012344, 1]}
