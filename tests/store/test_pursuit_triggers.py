"""Pursuit as the store applies it: triggers written in the alert's transaction, turned into
commands exactly once, a newer pursuit superseding an older one's return, and the return
brought forward only when the subject's last pursuit alert ends."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tagwatch.store import commands
from tagwatch.store.engine_repository import enqueue
from tests.api.matrix_support import insert_alert
from tests.support import fresh_id

pytestmark = pytest.mark.integration

POLICY = commands.PursuitPolicy(interval_s=15, limit_s=1800, command_ttl_s=600)


@pytest.fixture
def conn(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def subject(conn) -> tuple[int, str, list[str]]:
    region = fresh_id("pursuit-r")
    conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
    sid = conn.execute(
        "INSERT INTO subjects (name, region_id) VALUES ('P', %s) RETURNING id", (region,)
    ).fetchone()[0]
    tag, phone, slow = fresh_id("ptag"), fresh_id("pphone"), fresh_id("pfast")
    conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (tag,))
    conn.execute(
        "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s)"
        " VALUES (%s, 'phone', %s, 300)",
        (phone, f"owntracks/{phone}/p"),
    )
    # a device already reporting every 10 s is left alone
    conn.execute(
        "INSERT INTO devices (id, kind, expected_interval_s) VALUES (%s, 'tag', 10)", (slow,)
    )
    # and a Traccar Client phone is never commanded: nothing could reach it
    traccar = fresh_id("ptraccar")
    conn.execute("INSERT INTO devices (id, kind, osmand) VALUES (%s, 'phone', true)", (traccar,))
    for device in (tag, phone, slow, traccar):
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(now() - interval '1 hour', NULL))",
            (device, sid),
        )
    return sid, region, [tag, phone]


def _event(conn, alert_id: int, region: str, alert_type: str, event: str) -> None:
    with conn.transaction():
        if event == "cleared":
            conn.execute("UPDATE alerts SET cleared_at = now() WHERE id = %s", (alert_id,))
        if event == "resolved":
            conn.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (alert_id,))
        enqueue(conn, alert_id, region, alert_type, "critical", event)


def _apply(conn) -> None:
    with conn.transaction():
        while commands.apply_pursuit_triggers(conn, POLICY, 100):
            pass


def _rows(conn, device: str) -> list[tuple]:
    return conn.execute(
        "SELECT origin, args, state, alert_id, not_before <= now() FROM device_commands"
        " WHERE device_id = %s ORDER BY id",
        (device,),
    ).fetchall()


def test_a_pursuit_starts_is_superseded_and_ends_with_the_last_alert(conn, settings, subject):
    sid, region, (tag, phone) = subject
    entry = insert_alert(settings.database_url, sid, region, "exclusion_zone_entry")
    _event(conn, entry, region, "exclusion_zone_entry", "opened")
    battery = insert_alert(settings.database_url, sid, region, "battery_low")
    _event(conn, battery, region, "battery_low", "opened")  # not a pursuit type
    _apply(conn)
    assert _rows(conn, tag) == [
        ("pursuit", {"interval_s": 15, "duration_s": 1800}, "queued", entry, True),
        ("pursuit_end", {"interval_s": 60}, "queued", entry, False),
    ]
    assert _rows(conn, phone)[1][1] == {"interval_s": 300}
    assert conn.execute(
        "SELECT count(*) FROM device_commands c JOIN device_assignments a USING (device_id)"
        " WHERE a.subject_id = %s AND c.device_id NOT IN (%s, %s)",
        (sid, tag, phone),
    ).fetchone() == (0,)
    _apply(conn)  # triggers are used once
    assert len(_rows(conn, tag)) == 2

    tamper = insert_alert(settings.database_url, sid, region, "strap_tamper")
    _event(conn, tamper, region, "strap_tamper", "opened")
    _event(conn, entry, region, "exclusion_zone_entry", "cleared")  # the tamper is still open
    _apply(conn)
    states = [(r[0], r[2], r[3], r[4]) for r in _rows(conn, tag)]
    assert states == [
        ("pursuit", "queued", entry, True),
        ("pursuit_end", "cancelled", entry, False),
        ("pursuit", "queued", tamper, True),
        ("pursuit_end", "queued", tamper, False),  # not brought forward: the tamper is open
    ]
    _event(conn, tamper, region, "strap_tamper", "resolved")
    _apply(conn)
    assert _rows(conn, tag)[-1][2:] == ("queued", tamper, True)  # goes out now


def test_an_alert_already_over_starts_no_pursuit(conn, settings, subject):
    sid, region, (tag, _) = subject
    late = insert_alert(settings.database_url, sid, region, "victim_proximity")
    _event(conn, late, region, "victim_proximity", "opened")
    _event(conn, late, region, "victim_proximity", "cleared")  # both before the sender looked
    _apply(conn)
    assert _rows(conn, tag) == []
