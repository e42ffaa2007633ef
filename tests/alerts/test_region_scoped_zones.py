"""A global zone with a region applies to that region's subjects only, and follows a subject who
moves region (through the real broker, ingest and engine)."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.alerts.test_engine_end_to_end import CENTRE, fix_msg, gateway
from tests.support import count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration


def subject_in(conn: psycopg.Connection, region: str, device_id: str, start: float) -> int:
    conn.execute(
        "INSERT INTO regions (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (region, region)
    )
    (sid,) = conn.execute(
        "INSERT INTO subjects (name, region_id, timezone) VALUES (%s, %s, 'Africa/Johannesburg')"
        " RETURNING id",
        (device_id, region),
    ).fetchone()
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL))",
        (device_id, sid, start - 3600),
    )
    return sid


def test_a_regional_global_zone_alerts_only_its_regions_subjects(
    settings, service_env, provision, running_ingest
):
    here, there = fresh_id("reg-a"), fresh_id("reg-b")
    devices = [fresh_id("rz") for _ in range(3)]
    for device_id in devices:
        provision(device_id)
    start = time.time() - 600
    with psycopg.connect(settings.database_url) as conn:
        inside = subject_in(conn, here, devices[0], start)
        outside = subject_in(conn, there, devices[1], start)
        mover = subject_in(conn, there, devices[2], start)
        # a court building all of region A's subjects must keep away from; no owner, no group
        conn.execute(
            "INSERT INTO zones (name, kind, geometry, radius_m, region_id)"
            " VALUES ('court', 'exclusion', %s, 200, %s)",
            (Jsonb({"type": "Point", "coordinates": list(CENTRE)}), here),
        )
        conn.commit()
        time.sleep(1.2)  # the engine re-reads zones and subjects about once a second
        conn.execute("UPDATE subjects SET region_id = %s WHERE id = %s", (here, mover))
        conn.commit()
    time.sleep(1.2)
    messages = []
    for device_id in devices:  # all three stand in the middle of the court for five minutes
        messages += [fix_msg(device_id, start + 30 * i, 20, i) for i in range(10)]
    gw = gateway(settings, service_env)
    publish_all(gw, messages)
    gw.disconnect()

    def entries(sid: int) -> int:
        return count(
            settings.database_url,
            "SELECT count(*) FROM alerts WHERE subject_id = %s AND type = 'exclusion_zone_entry'",
            (sid,),
        )

    assert wait_for(lambda: entries(inside) == 1 and entries(mover) == 1, 20), running_ingest.log()[
        -2000:
    ]
    assert entries(outside) == 0
