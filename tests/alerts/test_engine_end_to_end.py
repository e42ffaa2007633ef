"""The alert engine through the real broker and database: alerts, their history and outbox, and
exactly-once under SIGKILL."""

from __future__ import annotations

import json
import math
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

CENTRE = (18.4770, -33.9600)  # lon, lat


def offset(metres_north: float) -> tuple[float, float]:
    return CENTRE[0], CENTRE[1] + metres_north / 111_320.0


def setup_subject(conn: psycopg.Connection, device_id: str, start: float) -> tuple[int, int]:
    conn.execute(
        "INSERT INTO regions (id, name) VALUES ('za-wc', 'Western Cape') ON CONFLICT DO NOTHING"
    )
    sid = conn.execute(
        "INSERT INTO subjects (name, region_id, timezone) VALUES (%s, 'za-wc',"
        " 'Africa/Johannesburg') RETURNING id",
        (device_id,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL))",
        (device_id, sid, start - 3600),
    )
    zid = conn.execute(
        "INSERT INTO zones (name, kind, geometry, radius_m, buffer_m, subject_id)"
        " VALUES ('victim home', 'exclusion', %s, 200, 300, %s) RETURNING id",
        (Jsonb({"type": "Point", "coordinates": list(CENTRE)}), sid),
    ).fetchone()[0]
    conn.commit()
    return sid, zid


def fix_msg(device_id: str, ts: float, north_m: float, seq: int) -> tuple[str, bytes]:
    lon, lat = offset(north_m)
    body = {"ts": ts, "lat": lat, "lon": lon, "acc": 6, "seq": seq}
    return f"em/v1/{device_id}/fix", json.dumps(body).encode()


def gateway(settings, service_env):
    password = service_env["TAGWATCH_MQTT_GATEWAY_URL"].split(":")[2].split("@")[0]
    return connect(
        settings.mqtt_gateway_url, "tagwatch-gateway", password, client_id=fresh_id("gw")
    )


def test_an_exclusion_entry_is_raised_once_warned_cleared_and_queued(
    settings, service_env, provision, running_ingest
):
    device_id = fresh_id("ex")
    provision(device_id)
    start = time.time() - 300  # 10 s fixes: the entry is proven two minutes ago, not late
    with psycopg.connect(settings.database_url) as conn:
        sid, zid = setup_subject(conn, device_id, start)
    # walk in from 2 km, stand 50 m from the centre for 10 minutes, walk out
    path = [2000 - 100 * i for i in range(10)]  # 2000 .. 1100
    path += [900, 700, 550, 420, 300]  # into the band
    path += [50] * 20  # inside
    path += [300, 600, 900, 1200, 1500]  # out
    messages = [fix_msg(device_id, start + 10 * i, m, i) for i, m in enumerate(path)]
    messages.insert(
        12,
        (
            f"em/v1/{device_id}/event",
            json.dumps({"ts": start + 10 * 11.5, "type": "strap_tamper"}).encode(),
        ),
    )
    gw = gateway(settings, service_env)
    publish_all(gw, messages)
    gw.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM alerts WHERE subject_id = %s AND cleared_at IS NOT NULL"
                " AND type = 'exclusion_zone_entry'",
                (sid,),
            )
            == 1
        ),
        timeout=20,
    ), running_ingest.log()[-3000:]
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT type, severity, late, zone_id, extract(epoch FROM first_fix_at),"
            " extract(epoch FROM opened_at), fix_count, worst_distance_m, region_id"
            " FROM alerts WHERE subject_id = %s ORDER BY id",
            (sid,),
        ).fetchall()
        by_type = {r[0]: r for r in rows}
        assert sorted(by_type) == ["exclusion_zone_entry", "exclusion_zone_warning", "strap_tamper"]
        assert len(rows) == 3
        entry = by_type["exclusion_zone_entry"]
        assert entry[1:4] == ("critical", False, zid)
        first_inside = start + 10 * 15
        assert math.isclose(float(entry[4]), first_inside, abs_tol=0.01)
        # the fourth fix inside completes the dwell
        assert math.isclose(float(entry[5]) - first_inside, 30, abs_tol=0.01)
        assert entry[6] >= 20
        assert entry[7] < -100  # 150 m inside the 200 m circle at the deepest
        assert entry[8] == "za-wc"
        outbox = conn.execute(
            "SELECT o.event, d.channel, d.status FROM outbox o JOIN deliveries d"
            " ON d.outbox_id = o.id JOIN alerts a ON a.id = o.alert_id"
            " WHERE a.subject_id = %s AND a.type = 'exclusion_zone_entry' ORDER BY o.id",
            (sid,),
        ).fetchall()
        assert outbox == [("opened", "mqtt", "pending"), ("cleared", "mqtt", "pending")]
        history = conn.execute(
            "SELECT h.actor, h.action FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
            " WHERE a.subject_id = %s AND a.type = 'exclusion_zone_entry' ORDER BY h.id",
            (sid,),
        ).fetchall()
        assert history == [("engine", "opened"), ("engine", "cleared")]


@pytest.mark.slow
def test_sigkill_during_evaluation_neither_loses_nor_duplicates_an_alert(
    settings, service_env, provision, ingest_factory
):
    """Ten subjects make three excursions each into their exclusion zone while ingest is
    killed at random moments: exactly three entry alerts per subject."""
    rng = random.Random(7)
    devices = [fresh_id("kill") for _ in range(10)]
    start = time.time() - 86400
    subjects = {}
    for device_id in devices:
        provision(device_id)
        with psycopg.connect(settings.database_url) as conn:
            subjects[device_id] = setup_subject(conn, device_id, start)[0]
    excursion = [1500] * 10 + [50] * 10
    path = (excursion * 3) + [1500] * 10
    messages = [
        fix_msg(device_id, start + 60 * i, m + rng.uniform(-5, 5), i)
        for i, m in enumerate(path)
        for device_id in devices
    ]
    ingest = ingest_factory()
    ingest.start_and_wait()
    gw = gateway(settings, service_env)
    done = threading.Event()

    def publish() -> None:
        for i in range(0, len(messages), 40):
            publish_all(gw, messages[i : i + 40])
            time.sleep(0.03)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    kills = 0
    while not done.is_set() or kills < 3:
        time.sleep(rng.uniform(0.2, 0.8))
        ingest.kill()
        kills += 1
        ingest.start_and_wait()
    thread.join()
    gw.disconnect()
    ids = list(subjects.values())
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)",
                (devices,),
            )
            == len(messages)
        ),
        timeout=60,
    ), ingest.log()[-3000:]
    time.sleep(1.0)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT subject_id, count(*), count(DISTINCT first_fix_at) FROM alerts"
            " WHERE subject_id = ANY(%s) AND type = 'exclusion_zone_entry' GROUP BY subject_id",
            (ids,),
        ).fetchall()
        outbox = conn.execute(
            "SELECT count(*) FROM outbox o JOIN alerts a ON a.id = o.alert_id"
            " WHERE a.subject_id = ANY(%s) AND a.type = 'exclusion_zone_entry'"
            " AND o.event = 'opened'",
            (ids,),
        ).fetchone()[0]
    assert sorted(r[1:] for r in rows) == [(3, 3)] * len(devices), rows
    assert outbox == 3 * len(devices)
    assert kills >= 3
