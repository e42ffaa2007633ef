"""Victim protection end to end, on the real broker, ingest and database (issue 15).

Each device speaks with its own credentials over the devices' TLS listener (a raw paho client,
as the person holding it could):

* a victim's panic button publishes `panic` on `em/v1/{id}/event`: a critical `victim_panic`
  opens on the offender whose victim zone follows her, with her last position, an outbox row
  goes out, and "your alarm was received" is queued to her devices;
* the offender's own tag publishing `panic` is stored and raises nothing;
* the offender stops in the warning band: `victim_proximity_warning`, and a notice is queued to
  her device that says nothing of where he is;
* her device falls silent: `victim_protection_degraded` on the offender's case once her last
  position is older than the zone's `victim_max_age_s`; it clears when she reports again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest

from tagwatch.alerts.victim_protection import VICTIM_NOTICES
from tagwatch.store.devices import add_assignment
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.zones import ZoneDraft, create_zone
from tests.support import connect, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

HER = (18.4645, -33.9806)  # lon, lat
FAR = (18.5000, -33.9800)  # about 3.3 km east
BAND = (18.4710, -33.9806)  # about 600 m east: in the 300-800 m warning band
MAX_AGE_S = 4.0


@dataclass
class Case:
    offender: int
    victim: int
    zone: int
    tag: str
    button: str
    passwords: dict[str, str]
    clients: list[mqtt.Client]

    def device(self, settings, device_id: str) -> mqtt.Client:
        """The device's own account on the devices' TLS listener."""
        client = connect(settings.mqtt_device_url, device_id, self.passwords[device_id])
        self.clients.append(client)
        return client


@pytest.fixture
def case(settings, provision) -> Iterator[Case]:
    tag, button = fresh_id("vp-tag"), fresh_id("vp-button")
    passwords = {d: provision(d) for d in (tag, button)}
    region = "victim-protection-tests"
    since = datetime.now(UTC) - timedelta(hours=1)
    with psycopg.connect(settings.database_url) as conn:
        ensure_region(conn, region, "victim protection tests")
        offender = add_subject(conn, name=f"Offender {tag}", region_id=region)
        victim = add_subject(conn, name=f"Victim {button}", region_id=region)
        add_assignment(conn, tag, offender, "offender", since, None)
        add_assignment(conn, button, victim, "victim", since, None)
        zone = create_zone(
            conn,
            ZoneDraft(
                name=f"her {button}",
                kind="victim",
                radius_m=300.0,
                buffer_m=500.0,
                subject_id=offender,
                victim_subject_id=victim,
                thresholds={
                    "warning_fixes": 2,
                    "warning_s": 1,
                    "victim_fixes": 2,
                    "victim_s": 1,
                    "victim_max_age_s": MAX_AGE_S,
                },
            ),
        )
        conn.commit()
    made = Case(offender, victim, zone, tag, button, passwords, [])
    yield made
    for client in made.clients:
        client.disconnect()
        client.loop_stop()


def _fix(device: str, at: tuple[float, float], seq: int) -> tuple[str, bytes]:
    body = {"ts": round(time.time(), 3), "lon": at[0], "lat": at[1], "acc": 5.0, "seq": seq}
    return f"em/v1/{device}/fix", json.dumps(body).encode()


def _event(device: str, kind: str, seq: int) -> tuple[str, bytes]:
    body = {"ts": round(time.time(), 3), "type": kind, "seq": seq}
    return f"em/v1/{device}/event", json.dumps(body).encode()


def _alerts(settings, subject: int, alert_type: str) -> list[dict]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT id, severity, zone_id, device_id, lat, lon, cleared_at FROM alerts"
            " WHERE subject_id = %s AND type = %s ORDER BY id",
            (subject, alert_type),
        ).fetchall()
    keys = ("id", "severity", "zone_id", "device_id", "lat", "lon", "cleared_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _notices(settings, device: str) -> list[dict]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT type, args, origin, alert_id FROM device_commands WHERE device_id = %s"
            " AND origin = 'victim_notice' ORDER BY id",
            (device,),
        ).fetchall()
    return [dict(zip(("type", "args", "origin", "alert_id"), r, strict=True)) for r in rows]


def test_a_victims_panic_is_a_critical_alert_with_her_position(settings, case, running_ingest):
    button = case.device(settings, case.button)
    tag = case.device(settings, case.tag)
    publish_all(tag, [_fix(case.tag, FAR, 1)])
    publish_all(button, [_fix(case.button, HER, 1)])
    time.sleep(0.5)
    publish_all(button, [_event(case.button, "panic", 2)])
    assert wait_for(lambda: _alerts(settings, case.offender, "victim_panic"), 20), (
        running_ingest.log()[-3000:]
    )
    [panic] = _alerts(settings, case.offender, "victim_panic")
    assert panic["severity"] == "critical"
    assert panic["zone_id"] == case.zone
    assert (panic["lon"], panic["lat"]) == pytest.approx(HER)
    assert panic["device_id"] is None, "her device is not named on his case"
    with psycopg.connect(settings.database_url) as conn:
        outbox = conn.execute(
            "SELECT o.type, o.severity, o.event, o.payload->>'lat', count(d.channel)"
            " FROM outbox o JOIN deliveries d ON d.outbox_id = o.id WHERE o.alert_id = %s"
            " GROUP BY o.id",
            (panic["id"],),
        ).fetchall()
    assert [row[:3] for row in outbox] == [("victim_panic", "critical", "opened")]
    assert float(outbox[0][3]) == pytest.approx(HER[1])
    assert outbox[0][4] >= 1, "at least the MQTT delivery"
    [notice] = _notices(settings, case.button)
    assert notice["type"] == "message"
    assert notice["args"] == {"text": VICTIM_NOTICES["victim_panic"]}
    # the offender's own alarm button: stored, no victim alert
    publish_all(tag, [_event(case.tag, "panic", 2)])
    assert wait_for(
        lambda: (
            psycopg.connect(settings.database_url)
            .execute(
                "SELECT count(*) FROM device_events WHERE device_id = %s AND type = 'panic'",
                (case.tag,),
            )
            .fetchone()[0]
            == 1
        ),
        20,
    )
    time.sleep(1.0)
    assert len(_alerts(settings, case.offender, "victim_panic")) == 1


def test_the_warning_band_notifies_her_without_his_position(settings, case, running_ingest):
    button = case.device(settings, case.button)
    tag = case.device(settings, case.tag)
    publish_all(button, [_fix(case.button, HER, 1)])
    time.sleep(0.5)
    for seq in range(1, 4):
        publish_all(tag, [_fix(case.tag, BAND, seq)])
        time.sleep(0.6)
    assert wait_for(lambda: _alerts(settings, case.offender, "victim_proximity_warning"), 20), (
        running_ingest.log()[-3000:]
    )
    assert not _alerts(settings, case.offender, "victim_proximity")
    assert wait_for(lambda: _notices(settings, case.button), 10)
    [notice] = _notices(settings, case.button)
    text = notice["args"]["text"]
    assert text == VICTIM_NOTICES["victim_proximity_warning"]
    assert not any(ch.isdigit() for ch in text), "no distance, no coordinates"
    assert not _notices(settings, case.tag), "the offender is told nothing"


def test_a_silent_victim_device_degrades_protection_until_she_reports(
    settings, case, running_ingest
):
    button = case.device(settings, case.button)
    publish_all(button, [_fix(case.button, HER, 1)])
    started = time.time()
    assert wait_for(lambda: _alerts(settings, case.offender, "victim_protection_degraded"), 30), (
        running_ingest.log()[-3000:]
    )
    assert time.time() - started >= MAX_AGE_S - 0.5, "not before her position is too old"
    [degraded] = _alerts(settings, case.offender, "victim_protection_degraded")
    assert degraded["severity"] == "warning"
    assert degraded["zone_id"] == case.zone
    assert degraded["lat"] is None and degraded["lon"] is None
    assert not _alerts(settings, case.victim, "no_communication"), "a victim is not judged"
    publish_all(button, [_fix(case.button, HER, 2)])
    assert wait_for(
        lambda: (
            _alerts(settings, case.offender, "victim_protection_degraded")[0]["cleared_at"]
            is not None
        ),
        20,
    )
