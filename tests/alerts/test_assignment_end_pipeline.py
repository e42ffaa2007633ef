"""Assignments bound every rule, through the real broker, ingest, database and API (issue 14).

Devices publish through the broker into a running ingest; assignments are ended through the API
(or `tagwatch device unassign`); then the rule clock is run fast (`rule_clock`, as a scenario
replay does) well past the 16-minute silence limit. A control subject that keeps its tag proves
that the clock did run and the silence rule did fire where it should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tagwatch.store import rule_clock
from tagwatch.store.engine_repository import clock
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

REGION = "za-wc"
SPEED = 240.0  # 16 minutes of silence in 4 wall seconds
LON, LAT = 18.4770, -33.9600


@pytest.fixture
def fast_clock(settings) -> Iterator[None]:
    """Give the rules back the wall clock whatever the test did with it."""
    yield
    with psycopg.connect(settings.database_url) as conn:
        rule_clock.clear(conn)


def _subject(conn: psycopg.Connection, name: str) -> int:
    conn.execute(
        "INSERT INTO regions (id, name) VALUES (%s, 'Western Cape') ON CONFLICT DO NOTHING",
        (REGION,),
    )
    row = conn.execute(
        "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id", (name, REGION)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _assign(conn: psycopg.Connection, device: str, sid: int, start: float) -> int:
    row = conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL)) RETURNING id",
        (device, sid, start),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _held(settings, provision, name: str, start: float) -> tuple[str, int, int]:
    """A provisioned tag held by a new subject from ``start``: (device, subject, assignment)."""
    device = fresh_id(name)
    provision(device)
    with psycopg.connect(settings.database_url) as conn:
        sid = _subject(conn, device)
        return device, sid, _assign(conn, device, sid, start)


def _publish(settings, service_env, device: str, first: float, n: int) -> None:
    """``n`` fixes a minute apart from ``first`` (all at most now), then wait till stored."""
    password = service_env["TAGWATCH_MQTT_GATEWAY_URL"].split(":")[2].split("@")[0]
    gw = connect(settings.mqtt_gateway_url, "tagwatch-gateway", password, client_id=fresh_id("gw"))
    body = [{"ts": first + 60 * i, "lat": LAT, "lon": LON, "acc": 6, "seq": i} for i in range(n)]
    publish_all(gw, [(f"em/v1/{device}/fix", json.dumps(b).encode()) for b in body])
    gw.disconnect()
    stored = "SELECT count(*) FROM fixes WHERE device_id = %s"
    assert wait_for(lambda: count(settings.database_url, stored, (device,)) == n)


def _state(settings, sid: int) -> dict:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT state FROM rule_state WHERE subject_id = %s", (sid,)).fetchone()
    return row[0] if row else {}


def _in_state(settings, sid: int, device: str) -> bool:
    return device in _state(settings, sid).get("devices", {})


def _no_communication(settings, sid: int, device: str) -> int:
    return count(
        settings.database_url,
        "SELECT count(*) FROM alerts WHERE subject_id = %s AND device_id = %s"
        " AND type = 'no_communication'",
        (sid, device),
    )


def _run_clock_fast(settings, minutes: float) -> float:
    """Scenario time from now, ``SPEED`` times as fast, until ``minutes`` have passed on it."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:  # now() moves
        now = time.time()
        rule_clock.set_clock(conn, now, now, SPEED)
        target = now + 60 * minutes
        assert wait_for(lambda: clock(conn) >= target, timeout=60 * minutes / SPEED + 30)
    return target


def _end(api, headers, sid: int, aid: int, to: float | None = None):
    body = {} if to is None else {"to": datetime.fromtimestamp(to, UTC).isoformat()}
    return api.patch(f"/api/v1/subjects/{sid}/assignments/{aid}", json=body, headers=headers)


def test_an_ended_assignment_never_raises_no_communication(
    settings, service_env, provision, running_ingest, api, login, fast_clock
):
    now = time.time()
    device, sid, aid = _held(settings, provision, "end", now - 3600)
    control, control_sid, _ = _held(settings, provision, "ctl", now - 3600)
    _publish(settings, service_env, device, now - 540, 10)
    _publish(settings, service_env, control, now - 540, 10)
    assert wait_for(lambda: _in_state(settings, sid, device)), running_ingest.log()[-2000:]

    answer = _end(api, login("supervisor", [REGION]), sid, aid)
    assert answer.status_code == 200, answer.text
    assert answer.json()["to"] is not None
    assert not _in_state(settings, sid, device), "released in the transaction that ended it"

    _run_clock_fast(settings, 45)
    assert wait_for(lambda: _no_communication(settings, control_sid, control) == 1, timeout=30), (
        "the control must alert: the clock ran"
    )
    assert _no_communication(settings, sid, device) == 0
    with psycopg.connect(settings.database_url) as conn:
        audit = conn.execute(
            "SELECT role, detail->>'device_id' FROM audit_log"
            " WHERE action = 'assignment_ended' AND subject_id = %s",
            (sid,),
        ).fetchall()
    assert audit == [("supervisor", device)]


def test_an_end_recorded_ahead_is_honoured_by_the_clock(
    settings, service_env, provision, running_ingest, api, login, fast_clock
):
    """The order ends in two minutes: the device is judged till then, released by the clock at
    its end, and its silence after it is nobody's."""
    now = time.time()
    device, sid, aid = _held(settings, provision, "ahead", now - 3600)
    _publish(settings, service_env, device, now - 240, 5)
    assert wait_for(lambda: _in_state(settings, sid, device))
    assert _end(api, login("admin", ["*"]), sid, aid, to=now + 120).status_code == 200
    assert _in_state(settings, sid, device), "held till its end"
    _run_clock_fast(settings, 45)
    assert wait_for(lambda: not _in_state(settings, sid, device), timeout=30)
    assert _no_communication(settings, sid, device) == 0


def test_an_open_no_communication_is_cleared_when_the_assignment_ends(
    settings, service_env, provision, running_ingest, api, login, fast_clock
):
    """The tag was taken off and fell silent; the centre was alerted; then the officer records
    the end: the alert is cleared (reason assignment_ended) but stays open for an operator."""
    now = time.time()
    device, sid, aid = _held(settings, provision, "off", now - 3600)
    _publish(settings, service_env, device, now - 240, 5)
    assert wait_for(lambda: _in_state(settings, sid, device))
    _run_clock_fast(settings, 20)
    assert wait_for(lambda: _no_communication(settings, sid, device) == 1, timeout=30)
    answer = _end(api, login("admin", ["*"]), sid, aid, to=now)
    assert answer.status_code == 200, answer.text
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT a.status, a.cleared_at IS NOT NULL, h.detail->>'reason' FROM alerts a"
            " JOIN alert_history h ON h.alert_id = a.id AND h.action = 'cleared'"
            " WHERE a.subject_id = %s AND a.type = 'no_communication'",
            (sid,),
        ).fetchone()
        events = conn.execute(
            "SELECT o.event FROM outbox o JOIN alerts a ON a.id = o.alert_id"
            " WHERE a.subject_id = %s ORDER BY o.id",
            (sid,),
        ).fetchall()
    assert row == ("open", True, "assignment_ended")
    assert events == [("opened",), ("cleared",)]


def test_a_tag_swapped_mid_order_is_forgotten_and_the_new_one_watched(
    settings, service_env, provision, running_ingest, api, login, fast_clock
):
    headers = login("supervisor", [REGION])
    now = time.time()
    old, sid, aid = _held(settings, provision, "old", now - 3600)
    new = fresh_id("new")
    provision(new)
    _publish(settings, service_env, old, now - 600, 6)
    swap = time.time()
    answer = _end(api, headers, sid, aid, to=swap)
    assert answer.status_code == 200, answer.text
    created = api.post(
        f"/api/v1/subjects/{sid}/assignments",
        json={"device_id": new, "from": datetime.fromtimestamp(swap, UTC).isoformat()},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    _publish(settings, service_env, new, swap + 1, 1)
    assert wait_for(lambda: _in_state(settings, sid, new))
    assert not _in_state(settings, sid, old)

    _run_clock_fast(settings, 45)
    assert wait_for(lambda: _no_communication(settings, sid, new) == 1, timeout=30), (
        "the new tag is monitored"
    )
    assert _no_communication(settings, sid, old) == 0


def test_a_tag_reused_for_a_new_subject_starts_clean(
    settings, service_env, provision, running_ingest, api, login, fast_clock
):
    headers = login("admin", ["*"])
    now = time.time()
    device, first, aid = _held(settings, provision, "reuse", now - 7200)
    _publish(settings, service_env, device, now - 900, 5)  # under the first holder
    ended_at = now - 600
    assert _end(api, headers, first, aid, to=ended_at).status_code == 200
    with psycopg.connect(settings.database_url) as conn:
        second = _subject(conn, fresh_id("second"))
    created = api.post(
        f"/api/v1/subjects/{second}/assignments",
        json={"device_id": device, "from": datetime.fromtimestamp(ended_at, UTC).isoformat()},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("DELETE FROM fixes WHERE device_id = %s", (device,))  # count afresh
    _publish(settings, service_env, device, now - 120, 2)
    assert wait_for(lambda: _in_state(settings, second, device))
    state = _state(settings, second)
    assert state["watermark"] == pytest.approx(now - 60)
    with psycopg.connect(settings.database_url) as conn:
        trail = conn.execute(
            "SELECT length(trail) FROM rule_state WHERE subject_id = %s", (second,)
        ).fetchone()
    assert trail == (2 * 32,), "two fixes of its own, none of the previous holder's"
    assert not _in_state(settings, first, device)

    _run_clock_fast(settings, 45)
    assert wait_for(lambda: _no_communication(settings, second, device) == 1, timeout=30)
    assert _no_communication(settings, first, device) == 0


def test_the_end_is_validated_scoped_and_never_reopens(settings, provision, api, login):
    now = time.time()
    device, sid, aid = _held(settings, provision, "val", now - 3600)
    headers = login("supervisor", [REGION])
    assert _end(api, headers, sid, aid, to=now - 7200).status_code == 422  # before the start
    assert _end(api, headers, sid, aid, to=now + 400 * 86400).status_code == 422
    assert _end(api, login("supervisor", ["za-gp"]), sid, aid).status_code == 404
    assert _end(api, login("operator", [REGION]), sid, aid).status_code == 403
    assert _end(api, headers, sid, aid + 10**9).status_code == 404
    assert _end(api, headers, sid, aid, to=now - 60).status_code == 200
    refused = _end(api, headers, sid, aid, to=now + 600)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["reason"] == "already_ended"
    assert _end(api, headers, sid, aid, to=now - 120).status_code == 200  # a correction
    listed = api.get(f"/api/v1/subjects/{sid}/assignments", headers=headers).json()
    assert [datetime.fromisoformat(a["to"]).timestamp() for a in listed] == [
        pytest.approx(now - 120)
    ]
    assert device


def test_the_cli_ends_a_device_assignment(settings, service_env, provision, running_ingest):
    now = time.time()
    device, sid, _ = _held(settings, provision, "cli", now - 3600)
    _publish(settings, service_env, device, now - 240, 5)
    assert wait_for(lambda: _in_state(settings, sid, device))
    env = {**os.environ, **service_env, "TAGWATCH_ENVIRONMENT": "test"}
    command = [sys.executable, "-m", "tagwatch", "device", "unassign", device]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["subject_id"] == sid and out["device_id"] == device
    assert not _in_state(settings, sid, device)
    with psycopg.connect(settings.database_url) as conn:
        upper = conn.execute(
            "SELECT upper(during) FROM device_assignments WHERE device_id = %s", (device,)
        ).fetchone()
        audit = conn.execute(
            "SELECT username FROM audit_log WHERE action = 'assignment_ended' AND subject_id = %s",
            (sid,),
        ).fetchone()
    assert upper is not None and upper[0] is not None
    assert audit is not None and audit[0].startswith("cli:")
    again = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 1 and "in stock" in again.stderr


def test_the_cli_ends_at_a_given_time_and_refuses_one_before_the_start(settings, provision):
    now = time.time()
    device, _sid, aid = _held(settings, provision, "cliat", now - 3600)
    env = {**os.environ, "TAGWATCH_DATABASE_URL": settings.database_url}
    env["TAGWATCH_ENVIRONMENT"] = "test"
    command = [sys.executable, "-m", "tagwatch", "device", "unassign", device, "--at"]

    def at(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    early = subprocess.run(
        [*command, at(now - 7200)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert early.returncode == 2 and "before_start" in early.stderr, early.stderr
    done = subprocess.run(
        [*command, at(now - 1800)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(settings.database_url) as conn:
        upper = conn.execute(
            "SELECT extract(epoch FROM upper(during))::float8 FROM device_assignments"
            " WHERE id = %s",
            (aid,),
        ).fetchone()
    assert upper is not None and upper[0] == pytest.approx(int(now - 1800))
