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
from tagwatch.store.engine_repository import PgEngineRepository
from tests.support import fresh_id

pytestmark = pytest.mark.integration

DISTRICT = {
    "type": "Polygon",
    "coordinates": [
        [[18.40, -33.95], [18.50, -33.95], [18.50, -33.85], [18.40, -33.85], [18.40, -33.95]]
    ],
}


def test_copies_of_a_geometry_share_one_object_and_each_zone_works(settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES ('za-wc', 'WC') ON CONFLICT DO NOTHING")
        subjects = [
            int(
                conn.execute(
                    "INSERT INTO subjects (name, region_id) VALUES (%s, 'za-wc') RETURNING id",
                    (fresh_id("district"),),
                ).fetchone()[0]
            )
            for _ in range(3)
        ]
        (start,) = conn.execute("SELECT coalesce(max(revision), 0) FROM zones").fetchone()
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
