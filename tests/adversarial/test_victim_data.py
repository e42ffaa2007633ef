"""Attack: an operator or a tracer looks for where a victim lives.

A victim of domestic violence is protected by a victim zone (a circle around their phone) and an
exclusion zone around their home, both drawn against the offender. Anyone in the monitoring
centre who can read them knows the address the offender is forbidden to go to; a rogue operator,
a tracer's stolen token or a curious colleague is one request away from it. Victims' data is for
supervisors and admins only (store/migrations/0013_victim_data.sql), and every read of it is
audited; tracing units get the offender's position, which is what they act on.

The victim's home and phone are at VICTIM_HOME; the offender walks to OFFENDER_NEAR, inside both
zones, and the real alert engine raises the alerts (exclusion entry, victim proximity) with their
outbox events. Then, against a real ``tagwatch api`` (uvicorn) with raw HTTP and a raw WebSocket,
as an operator and as a tracer, every route that could tell the victim's whereabouts is tried:
zones (list, filters, read), the victim subject (read, position, track, regions, assignments,
export), the subject list, the live map, proximity searches around the home, alerts (queue,
filters, each alert's detail), the live alert feed, reports, devices, and the notification
bodies that webhooks and MQTT ``em/v1/alerts/{region}`` carry. The raw text of every answer is
searched for the victim's coordinates (to 3 decimals), the home's address and the victim's name.
As a supervisor the same reads work and each writes an audit row naming the victim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tagwatch.alerts.batch import NewEvents
from tagwatch.alerts.dispatcher import notification_body
from tagwatch.alerts.engine import AlertEngine
from tagwatch.api.security import hash_password
from tagwatch.ingest.decode import engine_fixes
from tagwatch.store.engine_repository import PgEngineRepository
from tests.support import api_server, fresh_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "victim-attack-pass-1"

VICTIM_HOME = (-33.9512, 18.4631)  # lat, lon
OFFENDER_NEAR = (-33.9498, 18.4647)  # ~210 m away: inside both zones, 3 decimals apart
ADDRESS = "12 Protea Lane"
# The victim's coordinates to 3 decimals, not as part of a longer number or of a time of day.
MARKS = [re.compile(rf"(?<![\d:.]){re.escape(mark)}") for mark in ("-33.951", "18.463")]


# ------------------------------------------------------------------ a real API server


@pytest.fixture(scope="module")
def server(service_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    with api_server(service_env, tmp_path_factory.mktemp("victim-api")) as running:
        yield running.url


def user(database_url: str, url: str, role: str, regions: list[str]) -> tuple[str, str]:
    """A user of the role; its username and access token."""
    username = fresh_id(f"va-{role}")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password(PASSWORD), role, regions),
        )
    answer = httpx.post(
        f"{url}/api/v1/auth/token", data={"username": username, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return username, str(answer.json()["access_token"])


# ------------------------------------------------------------------ the victim and the offender


def fix_row(device: str, ts: datetime, lat: float, lon: float, seq: int) -> tuple[Any, ...]:
    """A fix as ingest stores it and hands it to the engine (store/ingest_writer.FIX_COLUMNS)."""
    return (device, ts, seq, lat, lon, 5.0, None, None, None, None, None, "gps")


@pytest.fixture(scope="module")
def world(server: str, settings) -> dict[str, Any]:
    db = settings.database_url
    region = fresh_id("va-region")
    supervisor, sup_token = user(db, server, "supervisor", [region])
    sup = {"Authorization": f"Bearer {sup_token}"}
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, 'victims')", (region,))
    api = httpx.Client(base_url=f"{server}/api/v1", headers=sup, timeout=30)

    def created(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 201, response.text
        return dict(response.json())

    victim_name = fresh_id("Jane Roe")
    offender = created(api.post("/subjects", json={"name": fresh_id("Off"), "region_id": region}))
    victim = created(api.post("/subjects", json={"name": victim_name, "region_id": region}))
    assert victim["victim"] is False  # not marked: the victim device marks them (migration 0013)
    tag, phone = fresh_id("va-tag"), fresh_id("va-vphone")
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (tag,))
        conn.execute(
            "INSERT INTO devices (id, kind, owntracks_topic) VALUES (%s, 'victim_phone', %s)",
            (phone, f"owntracks/jane/{phone}"),
        )
    start = datetime.now(UTC) - timedelta(minutes=30)
    for subject, device, role in ((offender, tag, "offender"), (victim, phone, "victim")):
        body = {"device_id": device, "role": role, "from": start.isoformat()}
        created(api.post(f"/subjects/{subject['id']}/assignments", json=body))
    victim_zone = created(
        api.post(
            "/zones",
            json={
                "name": f"{victim_name}, {ADDRESS}",
                "kind": "victim",
                "radius_m": 500,
                "buffer_m": 300,
                "subject_id": offender["id"],
                "victim_subject_id": victim["id"],
            },
        )
    )
    home_zone = created(
        api.post(
            "/zones",
            json={
                "name": f"{ADDRESS} (home)",
                "kind": "exclusion",
                "geometry": {"type": "Point", "coordinates": [VICTIM_HOME[1], VICTIM_HOME[0]]},
                "radius_m": 300,
                "buffer_m": 200,
                "subject_id": offender["id"],
                "protects_subject_id": victim["id"],
            },
        )
    )
    assert home_zone["geometry"]["coordinates"] == [VICTIM_HOME[1], VICTIM_HOME[0]]

    # The victim at home, the offender walking in: the real engine raises the alerts.
    with psycopg.connect(db) as conn:
        cursor = int(conn.execute("SELECT COALESCE(max(id), 0) FROM outbox").fetchone()[0])
        now = datetime.now(UTC) - timedelta(minutes=10)
        rows = [fix_row(phone, now + timedelta(seconds=30 * i), *VICTIM_HOME, i) for i in range(12)]
        rows += [
            fix_row(tag, now + timedelta(seconds=30 * i), *OFFENDER_NEAR, i) for i in range(1, 12)
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO fixes (device_id, ts, seq, lat, lon, acc, alt, spd, hdg, sats,"
                " batt, src) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
        AlertEngine().process(PgEngineRepository(conn), engine_fixes(rows), NewEvents())
        conn.commit()
        alerts = {
            r[1]: int(r[0])
            for r in conn.execute(
                "SELECT id, type FROM alerts WHERE subject_id = %s", (offender["id"],)
            )
        }
        outbox = conn.execute(
            "SELECT id, payload FROM outbox WHERE id > %s AND alert_id = ANY(%s)",
            (cursor, list(alerts.values())),
        ).fetchall()
    assert {"victim_proximity", "exclusion_zone_entry"} <= set(alerts), alerts
    return {
        "url": server,
        "db": db,
        "region": region,
        "supervisor": (supervisor, sup),
        "offender": offender["id"],
        "victim": victim["id"],
        "victim_name": victim_name,
        "phone": phone,
        "zones": (victim_zone["id"], home_zone["id"]),
        "alerts": alerts,
        "outbox": [(int(r[0]), r[1]) for r in outbox],
        "cursor": cursor,
    }


# ------------------------------------------------------------------ the attack


def leaks_in(text: str, victim_name: str) -> list[str]:
    found = [m.pattern for m in MARKS if m.search(text)]
    return found + [s for s in (ADDRESS, victim_name) if s in text]


def probes(w: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every read that could show the victim's whereabouts, as (path, query)."""
    victim, offender, region = w["victim"], w["offender"], w["region"]
    lat, lon = VICTIM_HOME
    window = {
        "from": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/zones", {"limit": 1000}),
        ("/zones", {"kind": "victim"}),
        ("/zones", {"kind": "exclusion"}),
        ("/zones", {"subject_id": offender}),
        ("/zones", {"region": region}),
        *[(f"/zones/{z}", {}) for z in w["zones"]],
        ("/subjects", {"limit": 1000}),
        ("/subjects", {"region": region}),
        *[
            (f"/subjects/{s}{suffix}", params)
            for s in (victim, offender)
            for suffix, params in [
                ("", {}),
                ("/position", {}),
                ("/track", window),
                ("/regions", {}),
                ("/assignments", {}),
                ("/export", window),
                ("/export", {**window, "format": "csv"}),
            ]
        ],
        ("/positions", {}),
        ("/positions", {"region": region}),
        ("/proximity", {"lat": lat, "lon": lon, "radius_m": 2000, **window}),
        ("/proximity", {"lat": lat, "lon": lon, "radius_m": 50, **window}),
        (
            "/proximity",
            {"lat": OFFENDER_NEAR[0], "lon": OFFENDER_NEAR[1], "radius_m": 500, **window},
        ),
        ("/alerts", {"limit": 1000}),
        ("/alerts", {"type": "victim_proximity"}),
        ("/alerts", {"subject_id": offender}),
        ("/alerts", {"region": region}),
        *[(f"/alerts/{a}", {}) for a in w["alerts"].values()],
        ("/reports/compliance", {"region": region, "month": datetime.now(UTC).strftime("%Y-%m")}),
        ("/reports/absconders", {"region": region, **window}),
        ("/devices", {"limit": 1000}),
        (f"/devices/{w['phone']}", {}),
    ]
    return calls


def feed_messages(url: str, token: str, after: int) -> list[str]:
    """The live alert feed from ``after``, raw text, until it has been quiet for 3 s."""
    ws_url = url.replace("http://", "ws://", 1) + f"/api/v1/alerts/stream?after={after}"
    received: list[str] = []
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"token": token}))
        try:
            while True:
                received.append(str(ws.recv(timeout=3)))
        except (TimeoutError, ConnectionClosed):
            pass
    return received


@pytest.mark.parametrize("role", ["operator", "tracer"])
def test_an_operator_or_tracer_finds_nothing_of_the_victim(world: dict[str, Any], role: str):
    username, token = user(world["db"], world["url"], role, [world["region"]])
    headers = {"Authorization": f"Bearer {token}"}
    leaks: list[str] = []
    probed = 0
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=f"{world['url']}/api/v1", headers=headers, timeout=30) as client:
        for path, params in probes(world):
            answer = client.get(path, params=params)
            probed += 1
            statuses[path] = answer.status_code
            assert answer.status_code < 500, f"{path}: {answer.status_code} {answer.text}"
            leaks += [f"GET {path}: {x}" for x in leaks_in(answer.text, world["victim_name"])]
        zones = [client.get(f"/zones/{z}").json() for z in world["zones"]]
        alert = client.get(f"/alerts/{world['alerts']['victim_proximity']}").json()
        # the platform keeps working for them: they can take the victim's alert
        taken = client.post(
            f"/alerts/{world['alerts']['victim_proximity']}/notes", json={"body": "on it"}
        )
    messages = feed_messages(world["url"], token, world["cursor"])
    probed += 1
    leaks += [f"feed: {x}" for m in messages for x in leaks_in(m, world["victim_name"])]
    for outbox_id, payload in world["outbox"]:  # what webhooks and MQTT em/v1/alerts/... carry
        probed += 1
        body = notification_body(outbox_id, payload).decode()
        leaks += [f"notification {outbox_id}: {x}" for x in leaks_in(body, world["victim_name"])]

    print(f"victim data as {role}: {probed} routes probed, {len(leaks)} leaks")
    assert leaks == [], leaks
    # ... and what they do see: that the zones exist, the alerts, the offender's position
    victim = world["victim"]
    for suffix in ("", "/position", "/track", "/regions", "/assignments"):
        assert statuses[f"/subjects/{victim}{suffix}"] == 404, suffix
    assert statuses[f"/subjects/{victim}/export"] == 403  # exports are supervisors' anyway
    for zone in zones:
        assert zone["redacted"] is True and zone["geometry"] is None and zone["name"] == ""
    assert alert["redacted"] is True and (alert["lat"], alert["lon"]) == OFFENDER_NEAR
    assert taken.status_code == 201, taken.text
    alert_ids = {json.loads(m).get("alert_id") for m in messages}
    assert set(world["alerts"].values()) <= alert_ids, "the feed lost the victim's alerts"
    with psycopg.connect(world["db"]) as conn:
        rows = conn.execute(
            "SELECT action FROM audit_log WHERE username = %s AND subject_id = %s",
            (username, victim),
        ).fetchall()
    assert rows == [], f"a {role} read victim data: {rows}"


def test_a_supervisor_reads_the_victim_and_is_audited(world: dict[str, Any]):
    username, headers = world["supervisor"]
    victim, (victim_zone, home_zone) = world["victim"], world["zones"]
    with psycopg.connect(world["db"]) as conn:
        before = int(conn.execute("SELECT COALESCE(max(id), 0) FROM audit_log").fetchone()[0])
    with httpx.Client(base_url=f"{world['url']}/api/v1", headers=headers, timeout=30) as client:
        home = client.get(f"/zones/{home_zone}").json()
        subject = client.get(f"/subjects/{victim}")
        alert = client.get(f"/alerts/{world['alerts']['victim_proximity']}").json()
    assert (
        home["geometry"]["coordinates"] == [VICTIM_HOME[1], VICTIM_HOME[0]] and not home["redacted"]
    )
    assert subject.status_code == 200 and subject.json()["victim"] is True, subject.text
    assert subject.json()["name"] == world["victim_name"]
    assert ADDRESS in alert["details"]["zone_name"] and alert["worst_distance_m"] is not None
    with psycopg.connect(world["db"]) as conn:
        rows = conn.execute(
            "SELECT action, detail FROM audit_log WHERE username = %s AND subject_id = %s"
            " AND id > %s ORDER BY id",
            (username, victim, before),
        ).fetchall()
    named = {(action, tuple(detail.get("zone_ids", ()))) for action, detail in rows}
    print(f"victim data as supervisor: {len(rows)} audit rows naming the victim: {sorted(named)}")
    assert ("victim_zone", (home_zone,)) in named, rows
    assert ("victim_zone", (victim_zone,)) in named, rows  # through the alert's detail
    assert ("victim_subject", ()) in named, rows
    assert all(detail.get("victim") is True for _, detail in rows), rows
