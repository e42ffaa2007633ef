"""Zone and subject revisions follow commit order (migration 0025): the engine's catch-up read
(`revision > last seen`) can never pass over a change that commits late.

Two writers draw zones at once; the first holds its transaction open. Without the migration the
second took the next revision and committed first, and an ingest that read then moved past a
revision still uncommitted: the first zone was never loaded. Now the second waits for the first
to commit, and every read sees a prefix of the revisions."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts.engine import AlertEngine
from tagwatch.store.engine_repository import PgEngineRepository
from tests.support import fresh_id

pytestmark = pytest.mark.integration


def _zone(conn: psycopg.Connection, sid: int, lon: float) -> int:
    (zid,) = conn.execute(
        "INSERT INTO zones (name, kind, geometry, radius_m, subject_id)"
        " VALUES ('order', 'exclusion', %s, 100, %s) RETURNING id",
        (Jsonb({"type": "Point", "coordinates": [lon, -33.9]}), sid),
    ).fetchone()
    return int(zid)


def test_a_zone_committed_late_is_not_passed_over(settings) -> None:
    url = settings.database_url
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            "INSERT INTO regions (id, name) VALUES ('za-wc', 'WC') ON CONFLICT DO NOTHING"
        )
        (sid,) = setup.execute(
            "INSERT INTO subjects (name, region_id) VALUES (%s, 'za-wc') RETURNING id",
            (fresh_id("rev"),),
        ).fetchone()
    engine = AlertEngine()
    with psycopg.connect(url) as reader:
        engine.sync(PgEngineRepository(reader))
        reader.commit()

        slow = psycopg.connect(url)
        late = _zone(slow, sid, 18.40)  # drawn first, committed last
        done = threading.Event()
        quick_zone: list[int] = []

        def quick() -> None:
            with psycopg.connect(url) as conn:
                quick_zone.append(_zone(conn, sid, 18.41))
            done.set()

        writer = threading.Thread(target=quick)
        writer.start()
        assert not done.wait(1.0), "the second writer committed before the first"
        engine.sync(PgEngineRepository(reader))  # what a batch in between reads
        reader.commit()
        assert late not in engine.index
        slow.commit()
        slow.close()
        assert done.wait(10)
        writer.join()
        time.sleep(0.05)
        engine.sync(PgEngineRepository(reader))
        reader.commit()
        assert late in engine.index and quick_zone[0] in engine.index
        revisions = dict(
            reader.execute(
                "SELECT id, revision FROM zones WHERE id = ANY(%s)", ([late, quick_zone[0]],)
            ).fetchall()
        )
        assert revisions[late] < revisions[quick_zone[0]]


def test_a_subject_update_that_changes_nothing_the_engine_reads_takes_no_lock(settings) -> None:
    """Renaming a subject or touching its notes draws no revision, so it never waits behind a
    zone being drawn."""
    url = settings.database_url
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            "INSERT INTO regions (id, name) VALUES ('za-wc', 'WC') ON CONFLICT DO NOTHING"
        )
        (sid,) = setup.execute(
            "INSERT INTO subjects (name, region_id) VALUES (%s, 'za-wc') RETURNING id",
            (fresh_id("rev"),),
        ).fetchone()
    with psycopg.connect(url) as holder, psycopg.connect(url) as other:
        _zone(holder, sid, 18.42)  # holds the revision lock
        other.execute("SET lock_timeout = '2s'")
        before = other.execute("SELECT revision FROM subjects WHERE id = %s", (sid,)).fetchone()
        other.execute("UPDATE subjects SET name = name || ' (renamed)' WHERE id = %s", (sid,))
        after = other.execute("SELECT revision FROM subjects WHERE id = %s", (sid,)).fetchone()
        other.commit()
        assert before == after
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("UPDATE subjects SET timezone = 'Europe/London' WHERE id = %s", (sid,))
        other.rollback()
        holder.commit()
