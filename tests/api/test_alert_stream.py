"""The live alert feed over a real WebSocket on the real app and database: new events arrive,
a reconnect resumes after its cursor, other regions stay out, a bad token is refused, and the
token is taken from the first message only (never from the URL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from starlette.websockets import WebSocketDisconnect

from tagwatch.store.engine_repository import enqueue
from tests.support import fresh_id

# A receive that never comes would block: fail instead.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
STREAM = "/api/v1/alerts/stream"


@contextmanager
def feed(api, token: str, query: str = "") -> Iterator[Any]:
    """The feed, authenticated the one way it accepts: the token as the first message."""
    with api.websocket_connect(f"{STREAM}{query}") as ws:
        ws.send_json({"token": token})
        yield ws


@pytest.fixture(scope="module")
def world(api, login):
    admin = login("admin", ["*"])
    north, south = fresh_id("wnorth"), fresh_id("wsouth")
    subjects = {}
    for region in (north, south):
        assert (
            api.post(
                "/api/v1/regions", json={"id": region, "name": region}, headers=admin
            ).status_code
            == 201
        )
        subjects[region] = api.post(
            "/api/v1/subjects", json={"name": fresh_id("s"), "region_id": region}, headers=admin
        ).json()["id"]
    operator = login("operator", [north])
    return {
        "north": north,
        "south": south,
        "n_subject": subjects[north],
        "s_subject": subjects[south],
        "operator": operator,
        "token": operator["Authorization"].removeprefix("Bearer "),
    }


def open_alert(settings, subject_id: int, region: str, alert_type: str = "strap_tamper") -> int:
    with psycopg.connect(settings.database_url) as conn:
        alert_id = conn.execute(
            "INSERT INTO alerts (subject_id, region_id, type, severity, opened_at, lat, lon,"
            " details) VALUES (%s, %s, %s, 'critical', %s, -33.9, 18.4, %s) RETURNING id",
            (
                subject_id,
                region,
                alert_type,
                datetime.now(UTC),
                json.dumps({"trail": [[1, 2]], "why": "test"}),
            ),
        ).fetchone()[0]
        enqueue(conn, alert_id, region, alert_type, "critical", "opened")
    return alert_id


def test_new_alert_events_arrive_without_positions_and_only_for_own_regions(api, world, settings):
    with feed(api, world["token"]) as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready"
        assert isinstance(ready["cursor"], int)
        elsewhere = open_alert(settings, world["s_subject"], world["south"])
        mine = open_alert(settings, world["n_subject"], world["north"])
        event = ws.receive_json()
        assert event["type"] == "alert"
        assert (event["alert_id"], event["event"]) == (mine, "opened")
        assert event["id"] > ready["cursor"]
        alert = event["alert"]
        assert (alert["type"], alert["status"], alert["subject_id"]) == (
            "strap_tamper",
            "open",
            world["n_subject"],
        )
        assert "lat" not in alert
        assert "lon" not in alert
        assert alert["details"] == {"why": "test"}  # the trail is location data

        # an operator's acknowledgement is an event too; the south's alert never shows
        acked = api.post(f"/api/v1/alerts/{mine}/acknowledge", headers=world["operator"])
        assert acked.status_code == 200
        event = ws.receive_json()
        assert (event["alert_id"], event["event"]) == (mine, "acknowledged")
        assert event["alert"]["status"] == "acknowledged"
        assert elsewhere != mine


def test_reconnect_resumes_after_the_cursor(api, world, settings):
    with feed(api, world["token"]) as ws:
        start = ws.receive_json()["cursor"]
    first = open_alert(settings, world["n_subject"], world["north"], "case_tamper")
    open_alert(settings, world["s_subject"], world["south"], "case_tamper")
    second = open_alert(settings, world["n_subject"], world["north"], "battery_low")

    with feed(api, world["token"], f"?after={start}") as ws:
        assert ws.receive_json() == {"type": "ready", "cursor": start}
        got = [ws.receive_json(), ws.receive_json()]
    assert [e["alert_id"] for e in got] == [first, second]
    assert got[0]["id"] < got[1]["id"]

    with feed(api, world["token"], f"?after={got[0]['id']}") as ws:
        assert ws.receive_json()["type"] == "ready"
        resumed = ws.receive_json()
    assert resumed == got[1]


@pytest.mark.parametrize(
    ("url", "first_message"),
    [
        (f"{STREAM}?token=not.a.token", None),
        (STREAM, {"token": "not.a.token"}),
        (STREAM, "hello"),
        (STREAM, {"token": 42}),
        (f"{STREAM}?after=-3", {"token": "x"}),
    ],
)
def test_bad_or_missing_token_closes_with_policy_violation(api, url, first_message):
    with api.websocket_connect(url) as ws:
        if first_message is not None:
            ws.send_text(json.dumps(first_message))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_a_valid_token_in_the_url_is_refused_even_with_a_first_message(api, world):
    """A token in the query string is in the access log of every proxy on the way: the feed
    does not take it, and does not wait for a first message either."""
    with api.websocket_connect(f"{STREAM}?token={world['token']}") as ws:
        ws.send_json({"token": world["token"]})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert "first message" in closed.value.reason


def test_an_event_committed_after_a_later_one_still_arrives(api, world, settings):
    """Outbox ids are taken before commit: a lower id can become visible after a higher one."""
    with feed(api, world["token"]) as ws:
        ws.receive_json()
        with psycopg.connect(settings.database_url) as slow:
            late = slow.execute(
                "INSERT INTO alerts (subject_id, region_id, type, severity, opened_at)"
                " VALUES (%s, %s, 'gps_lost', 'warning', now()) RETURNING id",
                (world["n_subject"], world["north"]),
            ).fetchone()[0]
            enqueue(slow, late, world["north"], "gps_lost", "warning", "opened")
            early = open_alert(settings, world["n_subject"], world["north"])  # commits first
            first = ws.receive_json()
            assert first["alert_id"] == early
        # the slow transaction commits now, with the lower outbox id
        second = ws.receive_json()
    assert second["alert_id"] == late
    assert second["id"] < first["id"]
