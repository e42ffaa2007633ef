"""Attacks on history, made with a tag's own MQTT credentials and a raw MQTT client.

A wearer controls the clock of what they publish. Before, any `ts` up to five minutes ahead was
stored, so the wearer of a reused tag (taken off subject A, now on B) could publish fixes dated
inside A's old holding period and they became A's track, e.g. placing A at a crime scene; and a
fix from years ago, or from before the wearer's own assignment, was stored as well.

Now: a fix or event older than the start of the device's current assignment is a dead letter
`before_assignment`; one older than the longest store-and-forward (7 days) is `too_late`; one from
the future stays `timestamp_in_future`. Nothing of it reaches any subject's track, export or
proximity answer. A legitimate store-and-forward upload (a fix from inside the holder's own
assignment, minutes old) is stored and shown as late, with when it was received.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tagwatch.ingest.broker_accounts import BrokerAdmin
from tagwatch.ingest.provisioning import provision_device
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

SCENE = (48.2082, 16.3738)  # lat, lon: the crime scene the attacker wants A placed at
HOME_B = (48.1500, 16.3000)
HOME_C = (48.3000, 16.4500)


def _fix(ts: float, where: tuple[float, float], seq: int) -> dict[str, Any]:
    return {"ts": ts, "lat": where[0], "lon": where[1], "acc": 5, "seq": seq}


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _provision(settings, device_id: str) -> str:
    """Register a tag (row and broker account); its password, as `device add` prints it."""
    with psycopg.connect(settings.database_url) as conn:
        return provision_device(conn, BrokerAdmin.from_url(settings.mqtt_admin_url), device_id)


@pytest.fixture(scope="module")
def world(settings) -> dict[str, Any]:
    """Tag T was worn by A from -3 h to -1 h and is worn by B since -30 min; tag U is worn by C
    since -2 h. A's own two fixes from its time are in the store already."""
    now = time.time()
    region = fresh_id("bd")
    tag_t, tag_u = fresh_id("reused"), fresh_id("honest")
    passwords = {tag_t: _provision(settings, tag_t), tag_u: _provision(settings, tag_u)}
    ids: dict[str, int] = {}
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        for name in ("A", "B", "C"):
            ids[name] = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (f"subject {name}", region),
            ).fetchone()[0]
        for device, subject, start, end in (
            (tag_t, ids["A"], now - 3 * 3600, now - 3600),
            (tag_t, ids["B"], now - 1800, None),
            (tag_u, ids["C"], now - 2 * 3600, None),
        ):
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, 'offender', tstzrange(%s, %s))",
                (device, subject, _dt(start), None if end is None else _dt(end)),
            )
        for offset, seq in ((2.5 * 3600, 1), (1.5 * 3600, 2)):  # A's own, received on time
            conn.execute(
                "INSERT INTO fixes (device_id, ts, seq, lat, lon, acc, received_at)"
                " VALUES (%s, %s, %s, 48.25, 16.25, 5, %s)",
                (tag_t, _dt(now - offset), seq, _dt(now - offset + 2)),
            )
    return {"now": now, "region": region, "T": tag_t, "U": tag_u, "pw": passwords, "ids": ids}


@pytest.fixture(scope="module")
def attack(settings, world, running_ingest) -> dict[str, Any]:
    """What the wearers publish, each with their own tag's credentials."""
    now, tag_t, tag_u = world["now"], world["T"], world["U"]
    t_topic, u_topic = f"em/v1/{tag_t}/fix", f"em/v1/{tag_u}/fix"
    planted_in_a = [_fix(now - 2 * 3600 + 60 * i, SCENE, 100 + i) for i in range(3)]
    wearer_b = connect(settings.mqtt_device_url, tag_t, world["pw"][tag_t])
    publish_all(
        wearer_b,
        [
            # the reused tag, dated inside A's old holding: frame A at the scene
            *[(t_topic, json.dumps(fix).encode()) for fix in planted_in_a],
            # the same inside a batch, beside an honest fix of B's: only the plant is refused
            (
                t_topic,
                json.dumps(
                    {
                        "fixes": [
                            _fix(now - 2 * 3600 + 300, SCENE, 200),
                            _fix(now - 5, HOME_B, 201),
                        ]
                    }
                ).encode(),
            ),
            # and a tamper event planted in A's time
            (
                f"em/v1/{tag_t}/event",
                json.dumps({"ts": now - 2 * 3600 + 30, "type": "strap_tamper"}).encode(),
            ),
            # between A's end and B's start: nobody's, and before B's assignment
            (t_topic, json.dumps(_fix(now - 45 * 60, SCENE, 300)).encode()),
            # older than any store-and-forward
            (t_topic, json.dumps(_fix(now - 8 * 86400, SCENE, 301)).encode()),
            # from the future
            (t_topic, json.dumps(_fix(now + 3600, SCENE, 302)).encode()),
            # B's own store-and-forward upload: ten minutes old, inside B's holding
            (t_topic, json.dumps(_fix(now - 600, HOME_B, 303)).encode()),
        ],
    )
    wearer_b.disconnect()
    wearer_c = connect(settings.mqtt_device_url, tag_u, world["pw"][tag_u])
    publish_all(
        wearer_c,
        [
            # before C's own assignment began
            (u_topic, json.dumps(_fix(now - 2.5 * 3600, SCENE, 1)).encode()),
            # C's tag was out of coverage: twenty minutes old, uploaded now
            (u_topic, json.dumps(_fix(now - 1200, HOME_C, 2)).encode()),
            (u_topic, json.dumps(_fix(now - 2, HOME_C, 3)).encode()),
        ],
    )
    wearer_c.disconnect()
    expected_dead = 9  # 3 planted + 1 batch plant + 1 event + 1 gap + 1 too late + 1 future + C's 1
    ok = wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM dead_letters WHERE sender = ANY(%s)",
                ([tag_t, tag_u],),
            )
            >= expected_dead
            and count(
                settings.database_url,
                "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)",
                ([tag_t, tag_u],),
            )
            >= 2 + 2 + 2
        ),
        timeout=30,
    )
    assert ok, running_ingest.log()[-3000:]
    time.sleep(1.0)  # anything else in flight would land now
    return {"planted": planted_in_a}


@pytest.fixture(scope="module")
def supervisor(login, world) -> dict[str, str]:
    return login("supervisor", [world["region"]])


def _track(api, headers, subject: int, now: float) -> list[dict[str, Any]]:
    response = api.get(
        f"/api/v1/subjects/{subject}/track",
        params={"from": _dt(now - 10 * 86400).isoformat(), "to": _dt(now + 60).isoformat()},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return [
        f["properties"] for f in response.json()["features"] if f["geometry"]["type"] == "Point"
    ]


def test_every_backdated_fix_is_a_dead_letter_with_its_reason(settings, world, attack):
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT sender, reason, topic, detail FROM dead_letters WHERE sender = ANY(%s)",
            ([world["T"], world["U"]],),
        ).fetchall()
    reasons: dict[tuple[str, str], int] = {}
    for sender, reason, _topic, _detail in rows:
        reasons[(sender, reason)] = reasons.get((sender, reason), 0) + 1
    print(f"\ndead letters of the attack: {sorted(reasons.items())}")
    assert reasons == {
        (world["T"], "before_assignment"): 6,
        (world["T"], "too_late"): 1,
        (world["T"], "timestamp_in_future"): 1,
        (world["U"], "before_assignment"): 1,
    }
    details = [r[3] for r in rows if r[1] == "before_assignment"]
    assert any(d.startswith("fixes[0]: fix ts ") for d in details)  # the batch's plant
    assert any(" event ts " in f" {d}" for d in details)  # the planted tamper event
    with psycopg.connect(settings.database_url) as conn:
        events = conn.execute(
            "SELECT count(*) FROM device_events WHERE device_id = %s", (world["T"],)
        ).fetchone()[0]
        alerts = conn.execute(
            "SELECT count(*) FROM alerts WHERE subject_id = %s", (world["ids"]["A"],)
        ).fetchone()[0]
    assert events == 0
    assert alerts == 0  # no tamper alert raised for A out of B's hands


def test_nothing_planted_reaches_the_previous_holders_track_export_or_proximity(
    api, supervisor, world, attack
):
    now, ids = world["now"], world["ids"]
    a_track = _track(api, supervisor, ids["A"], now)
    print(f"\nA's track after the attack: {len(a_track)} fixes (A's own: 2)")
    assert [p["seq"] for p in a_track] == [1, 2]
    assert all((p["late"], p["device_id"]) == (False, world["T"]) for p in a_track)

    export = api.get(
        f"/api/v1/subjects/{ids['A']}/export",
        params={
            "from": _dt(now - 10 * 86400).isoformat(),
            "to": _dt(now + 60).isoformat(),
            "format": "csv",
            "kind": "fixes",
        },
        headers=supervisor,
    )
    assert export.status_code == 200, export.text
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["seq"] for r in rows] == ["1", "2"]

    scene = api.get(
        "/api/v1/proximity",
        params={
            "lat": SCENE[0],
            "lon": SCENE[1],
            "radius_m": 200,
            "from": _dt(now - 10 * 86400).isoformat(),
            "to": _dt(now + 60).isoformat(),
        },
        headers=supervisor,
    )
    assert scene.status_code == 200, scene.text
    assert scene.json()["subjects"] == []  # nobody was framed at the scene


def test_the_new_holder_keeps_only_their_own_fixes_and_the_upload_shows_late(
    api, supervisor, world, attack
):
    now, ids = world["now"], world["ids"]
    b_track = _track(api, supervisor, ids["B"], now)
    assert [(p["seq"], p["late"]) for p in b_track] == [(303, True), (201, False)]
    upload = b_track[0]
    delay = datetime.fromisoformat(upload["received_at"]) - datetime.fromisoformat(upload["ts"])
    assert timedelta(seconds=590) < delay < timedelta(seconds=900)


def test_a_store_and_forward_upload_is_stored_and_marked_late_everywhere(
    api, supervisor, world, attack
):
    now, subject = world["now"], world["ids"]["C"]
    track = _track(api, supervisor, subject, now)
    assert [(p["seq"], p["late"]) for p in track] == [(2, True), (3, False)]
    late = track[0]
    delay = datetime.fromisoformat(late["received_at"]) - datetime.fromisoformat(late["ts"])
    print(f"\nC's buffered fix: received {delay.total_seconds():.0f} s after it was taken, late")
    assert delay > timedelta(seconds=1190)

    window = {"from": _dt(now - 3600).isoformat(), "to": _dt(now + 60).isoformat()}
    geojson = api.get(
        f"/api/v1/subjects/{subject}/export",
        params={**window, "kind": "fixes"},
        headers=supervisor,
    )
    assert geojson.status_code == 200, geojson.text
    exported = [f["properties"] for f in geojson.json()["features"]]
    assert [(p["seq"], p["late"]) for p in exported] == [(2, True), (3, False)]
    assert all(p["received_at"] for p in exported)
    as_csv = api.get(
        f"/api/v1/subjects/{subject}/export",
        params={**window, "kind": "fixes", "format": "csv"},
        headers=supervisor,
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["seq"], r["late"]) for r in rows] == [("2", "true"), ("3", "false")]

    found = api.get(
        "/api/v1/proximity",
        params={"lat": HOME_C[0], "lon": HOME_C[1], "radius_m": 100, **window},
        headers=supervisor,
    ).json()["subjects"]
    assert [s["subject_id"] for s in found] == [subject]
    assert found[0]["fixes_within"] == 2
    assert found[0]["late_fixes_within"] == 1
    assert found[0]["closest"]["received_at"]
