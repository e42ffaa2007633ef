"""Curfew in a small home through the real broker, ingest, engine, rule clock and database
(issue 14): indoor fixes of 40-150 m at a home 20 m across, ending on a multipath jump, then
silence, raise nothing; a real departure raises one curfew_violation, cleared on return by fixes
that merely overlap the home.

The subject's ``curfew_s`` is cut to 5 s (a per-subject override, as a centre may set one) so
that the silence after the jump outlasts it by the clock's next curfew pass, which the test
brings forward from a minute to now. Before issue 14 the clock opened a violation right there.
"""

from __future__ import annotations

import json
import math
import random
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.alerts.test_engine_end_to_end import gateway
from tests.support import count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOME = (18.4722, -33.9379)
M_LAT = 1 / 110_540
M_LON = 1 / (111_320 * math.cos(math.radians(HOME[1])))
ALWAYS = {"weekly": [{"start": "00:00", "end": "24:00"}]}


def at(east_m: float, north_m: float) -> tuple[float, float]:
    return HOME[0] + east_m * M_LON, HOME[1] + north_m * M_LAT


def setup(conn: psycopg.Connection, device_id: str, start: float) -> int:
    conn.execute(
        "INSERT INTO regions (id, name) VALUES ('za-wc', 'Western Cape') ON CONFLICT DO NOTHING"
    )
    sid = conn.execute(
        "INSERT INTO subjects (name, region_id, timezone, thresholds)"
        " VALUES (%s, 'za-wc', 'UTC', %s) RETURNING id",
        (device_id, Jsonb({"curfew_s": 5})),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL))",
        (device_id, sid, start - 3600),
    )
    ring = [list(at(e * 10, n * 10)) for e, n in ((-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1))]
    conn.execute(
        "INSERT INTO zones (name, kind, geometry, subject_id, schedule)"
        " VALUES ('small home', 'curfew', %s, %s, %s)",
        (Jsonb({"type": "Polygon", "coordinates": [ring]}), sid, Jsonb(ALWAYS)),
    )
    conn.commit()
    return sid


def fix_msg(device_id: str, ts: float, east_m: float, north_m: float, acc: float, seq: int):
    lon, lat = at(east_m, north_m)
    body = {"ts": ts, "lat": lat, "lon": lon, "acc": acc, "seq": seq}
    return f"em/v1/{device_id}/fix", json.dumps(body).encode()


def curfew_alerts(settings, sid: int) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT extract(epoch FROM first_fix_at), extract(epoch FROM opened_at),"
            " extract(epoch FROM cleared_at), details FROM alerts"
            " WHERE subject_id = %s AND type = 'curfew_violation' ORDER BY id",
            (sid,),
        ).fetchall()


def test_a_small_home_night_then_a_real_departure_through_the_pipeline(
    settings, service_env, provision, running_ingest
):
    rng = random.Random(14)
    device_id = fresh_id("cf")
    provision(device_id)
    start = time.time() - 300
    with psycopg.connect(settings.database_url) as conn:
        sid = setup(conn, device_id, start)
    time.sleep(2)  # the engine syncs zones and thresholds by revision
    gw = gateway(settings, service_env)

    # indoors at a home 20 m across: 40-150 m circles around it, then one multipath jump
    messages = []
    for i in range(15):
        acc = rng.uniform(40, 150)
        r, a = rng.uniform(0, 0.9 * acc), rng.uniform(0, 2 * math.pi)
        messages.append(
            fix_msg(device_id, start + 15 * i, r * math.cos(a), r * math.sin(a), acc, i)
        )
    messages.append(fix_msg(device_id, start + 15 * 15, 0, 350, 20, 15))
    publish_all(gw, messages)
    stored = "SELECT count(*) FROM fixes WHERE device_id = %s"
    assert wait_for(lambda: count(settings.database_url, stored, (device_id,)) == 16)
    # silent now for longer than curfew_s, through a curfew pass of the clock: the pass is due
    # a minute after the last evaluation; the test brings it forward to now (as if that minute
    # had gone by) and waits until the clock has run it (it then sets the next due time)
    time.sleep(7)
    due = "SELECT due_at FROM rule_state WHERE subject_id = %s"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE rule_state SET due_at = now() WHERE subject_id = %s", (sid,))
        brought = conn.execute(due, (sid,)).fetchone()[0]
        assert wait_for(lambda: conn.execute(due, (sid,)).fetchone()[0] > brought, 30)
    assert curfew_alerts(settings, sid) == [], running_ingest.log()[-3000:]

    # a real departure: a fix from home (it ends the run the jump began: evidence that only
    # silence separates still adds up within pending_gap_s, as for every episode), confident
    # fixes 700 m away, then back, fixes overlapping the home
    now = time.time()
    home = [fix_msg(device_id, now - 60, 20, -30, 90, 99)]
    away = [fix_msg(device_id, now - 50 + 10 * i, 700, 0, 8, 100 + i) for i in range(3)]
    back = [fix_msg(device_id, now - 15 + 5 * i, 0, 40, 60, 200 + i) for i in range(3)]
    publish_all(gw, [*home, *away, *back])
    gw.disconnect()
    assert wait_for(
        lambda: [a[2] is not None for a in curfew_alerts(settings, sid)] == [True], timeout=30
    ), running_ingest.log()[-3000:]
    ((first_fix, opened, cleared, _details),) = curfew_alerts(settings, sid)
    assert math.isclose(float(first_fix), now - 50, abs_tol=0.01)
    assert float(opened) >= float(first_fix)
    assert math.isclose(float(cleared), now - 15, abs_tol=0.01)  # the first fix back home
