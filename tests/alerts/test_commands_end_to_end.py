"""Commands to devices end to end, on the real broker, database, ingest and dispatcher:

* pursuit: a simulated tag (simulators/obedience.py) walks into an exclusion zone; the alert
  opens, the dispatcher's command sender sends `set_interval` at the pursuit interval, the tag
  answers and reports faster; when the alert clears it is sent back to its normal interval;
* a tag that never answers: its command is sent again until it expires, then shown expired;
* the broker's ACL: a tag cannot read another's commands (literal topic, wildcard, `#`), nor
  publish commands to itself; an answer naming another device's command is a dead letter.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig
from tagwatch.settings import MqttEndpoint
from tagwatch.simulators.obedience import Obedience
from tagwatch.simulators.publisher import connect_device
from tagwatch.store.devices import add_assignment
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.zones import ZoneDraft, create_zone
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

CENTRE = (18.60, -33.95)  # lon, lat: the zone's centre
OUTSIDE = (18.62, -33.95)  # about 1.8 km east
NORMAL_S = 3.0
PURSUIT_S = 1


@pytest.fixture
def dispatcher(settings) -> Iterator[Dispatcher]:
    fast = settings.model_copy(
        update={
            "pursuit_interval_s": PURSUIT_S,
            "pursuit_limit_s": 120,
            "command_resend_s": 2.0,
        }
    )
    config = DispatcherConfig(
        workers=1, poll_interval_s=0.2, mqtt_timeout_s=5.0, mqtt_client_id=fresh_id("dispatch")
    )
    running = Dispatcher(fast, config)
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    yield running
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the dispatcher did not stop"


@dataclass
class WalkingTag:
    """A tag that reports where `at` says, at the interval its commands set."""

    device_id: str
    client: mqtt.Client
    obedience: Obedience
    at: tuple[float, float] = OUTSIDE
    fixes: list[tuple[float, tuple[float, float]]] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            now = time.time()
            fix = {"ts": round(now, 3), "lat": self.at[1], "lon": self.at[0], "acc": 5.0}
            self.client.publish(
                f"em/v1/{self.device_id}/fix", json.dumps({**fix, "seq": seq}), qos=1
            )
            self.fixes.append((now, self.at))
            self.wake.wait(self.obedience.interval(time.monotonic()))
            self.wake.clear()

    def rate_between(self, start: float, end: float) -> float:
        """Fixes per second over [start, end]."""
        n = sum(1 for t, _ in self.fixes if start <= t <= end)
        return n / max(end - start, 1e-9)


def _subject_with_tag(settings, provision, *, zone: bool) -> tuple[str, str, int]:
    device = fresh_id("pursuit")
    password = provision(device)
    region = "pursuit-tests"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "UPDATE devices SET expected_interval_s = %s WHERE id = %s", (NORMAL_S, device)
        )
        ensure_region(conn, region, "pursuit tests")
        subject = add_subject(conn, name=f"S {device}", region_id=region)
        add_assignment(
            conn, device, subject, "offender", datetime.now(UTC) - timedelta(hours=1), None
        )
        if zone:
            create_zone(
                conn,
                ZoneDraft(
                    name=f"keep out {device}",
                    kind="exclusion",
                    geometry={"type": "Point", "coordinates": list(CENTRE)},
                    radius_m=300.0,
                    subject_id=subject,
                    thresholds={"entry_fixes": 2, "entry_s": 1, "clear_fixes": 2, "clear_s": 1},
                ),
            )
        conn.commit()
    return device, password, subject


def _commands(settings, device: str) -> list[dict]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT id, type, args, state, origin, send_count, detail FROM device_commands"
            " WHERE device_id = %s ORDER BY id",
            (device,),
        ).fetchall()
    keys = ("id", "type", "args", "state", "origin", "send_count", "detail")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def test_pursuit_raises_the_fix_rate_and_ends_when_the_alert_clears(
    settings, provision, running_ingest, dispatcher
):
    device, password, subject = _subject_with_tag(settings, provision, zone=True)
    obedience = Obedience(NORMAL_S)
    wake = threading.Event()  # the tag re-plans its next fix as soon as it is told
    client = connect_device(
        MqttEndpoint.parse(settings.mqtt_device_url), device, password, obedience, wake.set
    )
    tag = WalkingTag(device, client, obedience, wake=wake)
    walker = threading.Thread(target=tag.run, daemon=True)
    walker.start()
    try:
        time.sleep(3 * NORMAL_S)
        entered = time.time()
        tag.at = CENTRE
        assert wait_for(
            lambda: any(
                c["origin"] == "pursuit" and c["state"] == "acknowledged"
                for c in _commands(settings, device)
            ),
            40,
        ), (_commands(settings, device), running_ingest.log()[-3000:])
        acked = time.time()
        start = next(c for c in _commands(settings, device) if c["origin"] == "pursuit")
        assert start["type"] == "set_interval"
        assert start["args"] == {"interval_s": PURSUIT_S, "duration_s": 120}
        assert obedience.interval(time.monotonic()) == PURSUIT_S
        time.sleep(6)
        in_pursuit = tag.rate_between(acked + 0.5, time.time())
        before = tag.rate_between(entered - 3 * NORMAL_S, entered)
        print(f"fix rate before {before:.2f}/s, in pursuit {in_pursuit:.2f}/s")
        assert in_pursuit >= 0.7, in_pursuit  # every second
        assert before <= 0.45, before  # every three seconds
        assert in_pursuit > 2 * before
        # leave: the alert clears and the scheduled return goes out now, not at the limit
        tag.at = OUTSIDE
        assert wait_for(
            lambda: any(
                c["origin"] == "pursuit_end" and c["state"] == "acknowledged"
                for c in _commands(settings, device)
            ),
            40,
        ), _commands(settings, device)
        back = next(c for c in _commands(settings, device) if c["origin"] == "pursuit_end")
        assert back["args"] == {"interval_s": NORMAL_S}
        assert obedience.interval(time.monotonic()) == NORMAL_S
        returned = time.time()
        time.sleep(3 * NORMAL_S + 0.5)
        assert tag.rate_between(returned + 0.5, time.time()) <= 0.45
        with psycopg.connect(settings.database_url) as conn:
            alert = conn.execute(
                "SELECT cleared_at IS NOT NULL FROM alerts WHERE subject_id = %s"
                " AND type = 'exclusion_zone_entry'",
                (subject,),
            ).fetchone()
        assert alert == (True,)
    finally:
        tag.stop.set()
        tag.wake.set()
        walker.join(10)
        client.disconnect()
        client.loop_stop()


def test_a_tag_that_never_answers_gets_it_again_then_it_expires(
    settings, provision, api, login, dispatcher
):
    device, password, _ = _subject_with_tag(settings, provision, zone=False)
    obedience = Obedience(NORMAL_S, answer=False)
    client = connect_device(
        MqttEndpoint.parse(settings.mqtt_device_url), device, password, obedience
    )
    try:
        time.sleep(1.0)  # subscribed
        queued = api.post(
            f"/api/v1/devices/{device}/commands",
            json={"type": "locate_now", "expires_in_s": 10},
            headers=login("operator", ["pursuit-tests"]),
        )
        assert queued.status_code == 201, queued.text
        command_id = queued.json()["id"]
        assert wait_for(lambda: _commands(settings, device)[0]["state"] == "expired", 30)
        command = _commands(settings, device)[0]
        assert command["detail"] == "no answer before it expired"
        assert command["send_count"] >= 2  # sent again while it waited for an answer
        assert [c["id"] for c in obedience.log] == [str(command_id)]  # applied once
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_tag_reads_only_its_own_commands(settings, provision, running_ingest, dispatcher):
    """The attack: tag A's owner, with A's credentials, tries to read B's commands and to forge
    commands and answers. Nothing of B's reaches A, B's command state is B's answer alone."""
    victim, victim_password, _ = _subject_with_tag(settings, provision, zone=False)
    attacker = fresh_id("attacker")
    attacker_password = provision(attacker)
    received: list[tuple[str, bytes]] = []
    granted: list[list[int]] = []
    spy = connect(settings.mqtt_device_url, attacker, attacker_password)

    def on_subscribe(_c, _u, _mid, reasons, _p):
        granted.append([int(getattr(r, "value", r)) for r in reasons])

    spy.on_subscribe = on_subscribe
    spy.on_message = lambda _c, _u, m: received.append((m.topic, m.payload))
    assert wait_for(spy.is_connected, 10)
    spy.subscribe(
        [
            (f"em/v1/{victim}/cmd", 1),
            ("em/v1/+/cmd", 1),
            ("em/v1/#", 1),
            ("#", 1),
            (f"em/v1/{attacker}/cmd", 1),
        ]
    )
    assert wait_for(lambda: bool(granted), 10)
    assert granted[0][:4] == [0x80] * 4, granted  # refused; its own topic is granted
    assert granted[0][4] == 1, granted
    obedience = Obedience(NORMAL_S)
    owner = connect_device(
        MqttEndpoint.parse(settings.mqtt_device_url), victim, victim_password, obedience
    )
    try:
        time.sleep(1.0)
        # a forged command on its own topic never reaches anyone (publish refused)
        spy.publish(f"em/v1/{attacker}/cmd", json.dumps({"id": "1", "type": "beep"}), qos=1)
        with psycopg.connect(settings.database_url) as conn:
            command_id = conn.execute(
                "INSERT INTO device_commands (device_id, type, args, origin, expires_at)"
                " VALUES (%s, 'message', '{\"text\": \"report to the office\"}', 'test',"
                " now() + interval '1 minute') RETURNING id",
                (victim,),
            ).fetchone()[0]
        # the attacker answers for B's command on its own topic: a dead letter, B untouched
        forged = json.dumps({"id": str(command_id), "ts": time.time(), "status": "failed"})
        spy.publish(f"em/v1/{attacker}/ack", forged, qos=1).wait_for_publish(10)
        assert wait_for(lambda: _commands(settings, victim)[0]["state"] == "acknowledged", 30)
        assert wait_for(
            lambda: (
                count(
                    settings.database_url,
                    "SELECT count(*) FROM dead_letters WHERE topic = %s"
                    " AND reason = 'unknown_command'",
                    (f"em/v1/{attacker}/ack",),
                )
                == 1
            ),
            20,
        )
        time.sleep(1.0)
        assert [c["type"] for c in obedience.log] == ["message"]
        assert received == [], received
    finally:
        owner.disconnect()
        owner.loop_stop()
        spy.disconnect()
        spy.loop_stop()


def test_a_phone_gets_its_command_in_the_apps_format_and_no_other_phones(
    settings, provision, dispatcher, running_ingest
):
    """OwnTracks over MQTT: the phone reads `<its topic>/cmd` and gets the booklet's own `cmd`
    object; another phone's account cannot subscribe to it, by name or by wildcard. The app
    answers `reportLocation` with a location whose `t` is "r": that acknowledges it."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "owntracks_commands"
    phones = {}
    for name in ("phone", "nosy"):
        device = fresh_id(name)
        topic = f"owntracks/{fresh_id('u')}/{name}"
        phones[name] = (device, topic, provision(device, "phone", topic))
    device, topic, password = phones["phone"]
    nosy_device, _, nosy_password = phones["nosy"]
    got: list[bytes] = []
    granted: list[list[int]] = []
    phone = connect(settings.mqtt_device_url, device, password)
    nosy = connect(settings.mqtt_device_url, nosy_device, nosy_password)
    phone.on_message = lambda _c, _u, m: got.append(m.payload)
    nosy.on_message = lambda _c, _u, m: got.append(b"nosy:" + m.payload)
    nosy.on_subscribe = lambda _c, _u, _m, reasons, _p: granted.append(
        [int(getattr(r, "value", r)) for r in reasons]
    )
    try:
        assert wait_for(lambda: phone.is_connected() and nosy.is_connected(), 10)
        phone.subscribe(f"{topic}/cmd", qos=1)
        nosy.subscribe([(f"{topic}/cmd", 1), ("owntracks/+/+/cmd", 1), ("owntracks/#", 1)])
        assert wait_for(lambda: bool(granted), 10)
        assert granted[0] == [0x80] * 3, granted
        time.sleep(0.5)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "INSERT INTO device_commands (device_id, type, origin, expires_at)"
                " VALUES (%s, 'locate_now', 'test', now() + interval '1 minute')",
                (device,),
            )
        assert wait_for(lambda: bool(got), 20), _commands(settings, device)
        time.sleep(0.5)
        expected = json.loads((fixtures / "report_location.json").read_text())
        assert [json.loads(p) for p in got] == [expected]
        assert _commands(settings, device)[0]["state"] == "sent"
        answer = {"_type": "location", "t": "r", "lat": 51.5, "lon": -0.12, "acc": 10,
                  "tst": int(time.time()) - 5}  # fmt: skip
        publish_all(phone, [(topic, json.dumps(answer).encode())])
        assert wait_for(lambda: _commands(settings, device)[0]["state"] == "acknowledged", 20), (
            _commands(settings, device)
        )
        assert _commands(settings, device)[0]["detail"] == "answered with a location (t: r)"
    finally:
        for client in (phone, nosy):
            client.disconnect()
            client.loop_stop()
