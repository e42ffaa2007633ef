"""Alerts through the API on the real app and database: the queue (order, filters, cursor), the
audited detail, acknowledge / resolve / note with the lifecycle's rules, declared absconders,
roles and region isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts.vocabulary import SEVERITY
from tagwatch.store.engine_repository import enqueue
from tests.support import count, fresh_id

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def world(api, login):
    admin = login("admin", ["*"])
    north, south = fresh_id("anorth"), fresh_id("asouth")
    for region in (north, south):
        response = api.post("/api/v1/regions", json={"id": region, "name": region}, headers=admin)
        assert response.status_code == 201
    return {
        "north": north,
        "south": south,
        "admin": admin,
        "operator": login("operator", [north]),
        "operator2": login("operator", [north]),
        "supervisor": login("supervisor", [north]),
        "tracer": login("tracer", [north]),
        "south_operator": login("operator", [south]),
    }


def make_subject(api, world, region: str) -> int:
    response = api.post(
        "/api/v1/subjects",
        json={"name": fresh_id("s"), "region_id": region},
        headers=world["admin"],
    )
    assert response.status_code == 201
    return response.json()["id"]


def make_alert(
    settings,
    subject_id: int,
    region: str,
    alert_type: str = "battery_low",
    opened_at: datetime | None = None,
    **columns,
) -> int:
    """An alert row the engine's way: row, history 'opened', outbox 'opened'."""
    severity = SEVERITY[alert_type]
    values = {
        "subject_id": subject_id,
        "region_id": region,
        "type": alert_type,
        "severity": severity,
        "opened_at": opened_at or NOW,
        "episode_key": fresh_id(alert_type),
        **columns,
    }
    if "details" in values:
        values["details"] = Jsonb(values["details"])
    names = ", ".join(values)
    marks = ", ".join(f"%({n})s" for n in values)
    with psycopg.connect(settings.database_url) as conn:
        alert_id = conn.execute(
            f"INSERT INTO alerts ({names}) VALUES ({marks}) RETURNING id", values
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO alert_history (alert_id, actor, action) VALUES (%s, 'engine', 'opened')",
            (alert_id,),
        )
        enqueue(conn, alert_id, region, alert_type, severity, "opened")
    return alert_id


def test_queue_orders_by_severity_then_age_and_pages(api, world, settings):
    sid = make_subject(api, world, world["north"])
    hour = timedelta(hours=1)
    info = make_alert(settings, sid, world["north"], "battery_low", NOW - 5 * hour)
    crit_new = make_alert(settings, sid, world["north"], "strap_tamper", NOW - hour)
    warn = make_alert(settings, sid, world["north"], "gps_lost", NOW - 2 * hour)
    crit_old = make_alert(settings, sid, world["north"], "exclusion_zone_entry", NOW - 3 * hour)
    crit_tie = make_alert(settings, sid, world["north"], "victim_proximity", NOW - 3 * hour)
    expected = [crit_old, crit_tie, crit_new, warn, info]

    operator = world["operator"]
    whole = api.get("/api/v1/alerts", params={"subject_id": sid}, headers=operator)
    assert whole.status_code == 200
    assert [a["id"] for a in whole.json()["items"]] == expected
    assert whole.json()["next_cursor"] is None

    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"subject_id": sid, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/alerts", params=params, headers=operator).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected

    def ids(**params) -> list[int]:
        response = api.get("/api/v1/alerts", params={"subject_id": sid, **params}, headers=operator)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["items"]]

    assert ids(severity="critical") == [crit_old, crit_tie, crit_new]
    assert ids(severity=["warning", "info"]) == [warn, info]
    assert ids(type="gps_lost") == [warn]
    assert ids(status="open") == expected
    assert ids(status="resolved") == []
    assert ids(region=world["north"]) == expected
    assert ids(region=world["south"]) == []
    window = {
        "opened_from": (NOW - 3 * hour).isoformat(),
        "opened_to": (NOW - hour).isoformat(),
    }
    assert ids(**window) == [crit_old, crit_tie, warn]

    assert api.get("/api/v1/alerts?type=meteor", headers=operator).status_code == 422
    assert api.get("/api/v1/alerts?status=closed", headers=operator).status_code == 422
    bad_cursor = api.get("/api/v1/alerts?cursor=not-a-cursor", headers=operator)
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["detail"]["reason"] == "invalid_cursor"
    naive = api.get("/api/v1/alerts?opened_from=2026-01-01T00:00:00", headers=operator)
    assert naive.status_code == 422


def test_detail_has_history_notes_fixes_and_is_audited(api, world, settings):
    sid = make_subject(api, world, world["north"])
    device = fresh_id("tag")
    first = NOW - timedelta(minutes=30)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, sid, NOW - timedelta(days=1)),
        )
        # minutes relative to the first fix: two well outside the window, five inside it
        for minute in (-60, -8, 0, 5, 10, 18, 45):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, 8)",
                (device, first + timedelta(minutes=minute), -33.9 + minute / 1000, 18.4),
            )
    alert_id = make_alert(
        settings,
        sid,
        world["north"],
        "absconder",
        opened_at=first,
        device_id=device,
        first_fix_at=first,
        last_fix_at=first + timedelta(minutes=5),
        cleared_at=first + timedelta(minutes=8),
        lat=-33.9,
        lon=18.4,
        details={
            "declared_by": "someone",
            "last_known": {"lat": -33.9, "lon": 18.4},
            "trail": [{"lat": -33.9, "lon": 18.4}],
        },
    )
    operator = world["operator"]
    note = api.post(
        f"/api/v1/alerts/{alert_id}/notes", json={"body": "unit dispatched"}, headers=operator
    )
    assert note.status_code == 201, note.text

    # the queue carries no positions
    listed = api.get("/api/v1/alerts", params={"subject_id": sid}, headers=operator).json()
    (summary,) = listed["items"]
    assert "lat" not in summary
    assert summary["details"] == {"declared_by": "someone"}

    before = count(
        settings.database_url,
        "SELECT count(*) FROM audit_log WHERE action = 'alert_detail' AND subject_id = %s",
        (sid,),
    )
    response = api.get(
        f"/api/v1/alerts/{alert_id}", params={"reason": "case review"}, headers=operator
    )
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["lat"] == -33.9
    assert detail["details"]["trail"] == [{"lat": -33.9, "lon": 18.4}]
    assert [(h["actor"], h["action"]) for h in detail["history"]][:1] == [("engine", "opened")]
    assert "note" in [h["action"] for h in detail["history"]]
    assert [n["body"] for n in detail["notes"]] == ["unit dispatched"]
    fixes = detail["fixes"]
    assert fixes["type"] == "FeatureCollection"
    times = [f["properties"]["ts"] for f in fixes["features"]]
    assert len(times) == 5  # first fix - 10 min .. cleared + 10 min
    assert times == sorted(times)
    assert fixes["features"][0]["geometry"]["coordinates"] == [18.4, pytest.approx(-33.908)]

    rows = psycopg.connect(settings.database_url).execute(
        "SELECT username, role, detail FROM audit_log WHERE action = 'alert_detail'"
        " AND subject_id = %s ORDER BY id",
        (sid,),
    )
    audited = rows.fetchall()
    assert len(audited) == before + 1
    assert audited[-1][1] == "operator"
    assert audited[-1][2]["alert_id"] == alert_id
    assert audited[-1][2]["reason"] == "case review"

    assert api.get("/api/v1/alerts/999999999", headers=operator).status_code == 404


def test_acknowledge_resolve_and_notes(api, world, settings):
    sid = make_subject(api, world, world["north"])
    alert_id = make_alert(settings, sid, world["north"], "gps_lost")
    op, op2 = world["operator"], world["operator2"]
    url = f"/api/v1/alerts/{alert_id}"

    acked = api.post(f"{url}/acknowledge", json={"note": "calling"}, headers=op)
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["changed"] is True
    again = api.post(f"{url}/acknowledge", headers=op)  # no body: a retried request
    assert again.status_code == 200
    assert again.json()["changed"] is False
    taken = api.post(f"{url}/acknowledge", headers=op2)
    assert taken.status_code == 409
    assert taken.json()["detail"]["reason"] == "already_acknowledged"

    unknown = api.post(f"{url}/resolve", json={"outcome": "vanished"}, headers=op2)
    assert unknown.status_code == 422
    assert unknown.json()["detail"]["reason"] == "unknown_outcome"
    resolved = api.post(
        f"{url}/resolve", json={"outcome": "equipment_fault", "note": "new tag"}, headers=op2
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["outcome"] == "equipment_fault"
    twice = api.post(f"{url}/resolve", json={"outcome": "false_alarm"}, headers=op)
    assert twice.status_code == 409
    assert twice.json()["detail"] == {
        "reason": "already_resolved",
        "message": f"alert {alert_id} is already resolved",
        "alert_id": alert_id,
        "status": "resolved",
    }
    assert api.post(f"{url}/acknowledge", headers=op).status_code == 409

    blank = api.post(f"{url}/notes", json={"body": "   "}, headers=op)
    assert blank.status_code == 422
    assert blank.json()["detail"]["reason"] == "empty_note"
    later = api.post(f"{url}/notes", json={"body": "subject called back"}, headers=world["tracer"])
    assert later.status_code == 201
    assert later.json()["alert_id"] == alert_id

    detail = api.get(url, headers=op).json()
    assert [h["action"] for h in detail["history"]] == [
        "opened",
        "acknowledged",
        "resolved",
        "note",
    ]
    assert [n["body"] for n in detail["notes"]] == ["calling", "new tag", "subject called back"]
    assert detail["resolution_note"] == "new tag"
    with psycopg.connect(settings.database_url) as conn:
        events = conn.execute(
            "SELECT event FROM outbox WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
    assert [e[0] for e in events] == ["opened", "acknowledged", "resolved"]


def test_operator_actions_reuse_the_action_pools_connections(api, world, settings):
    """Actions take a connection of the app's action pool, not a new one per request (issue
    13): a run of them, refusals included, opens no further connection, and a refused action
    leaves nothing behind (its transaction is rolled back when the connection goes back)."""
    sid = make_subject(api, world, world["north"])
    alert_id = make_alert(settings, sid, world["north"], "gps_lost")
    op, op2 = world["operator"], world["operator2"]
    url = f"/api/v1/alerts/{alert_id}"
    pool = api.app.state.action_pool
    assert api.post(f"{url}/acknowledge", headers=op).status_code == 200
    opened = pool.get_stats().get("connections_num", 0)
    assert opened >= 1
    for _ in range(5):
        assert api.post(f"{url}/acknowledge", headers=op).status_code == 200  # a no-op
        assert api.post(f"{url}/acknowledge", headers=op2).status_code == 409
        refused = api.post(f"{url}/resolve", json={"outcome": "vanished"}, headers=op)
        assert refused.status_code == 422
    assert pool.get_stats().get("connections_num", 0) == opened
    assert api.get(url, headers=op).json()["status"] == "acknowledged"
    assert [h["action"] for h in api.get(url, headers=op).json()["history"]] == [
        "opened",
        "acknowledged",
    ]


def test_tamper_needs_a_note_to_resolve(api, world, settings):
    sid = make_subject(api, world, world["north"])
    alert_id = make_alert(settings, sid, world["north"], "strap_tamper")
    url = f"/api/v1/alerts/{alert_id}/resolve"
    op = world["operator"]
    for body in ({"outcome": "false_alarm"}, {"outcome": "false_alarm", "note": " "}):
        refused = api.post(url, json=body, headers=op)
        assert refused.status_code == 422
        assert refused.json()["detail"]["reason"] == "note_required"
    assert api.get(f"/api/v1/alerts/{alert_id}", headers=op).json()["status"] == "open"
    ok = api.post(url, json={"outcome": "false_alarm", "note": "strap intact"}, headers=op)
    assert ok.status_code == 200
    assert ok.json()["acknowledged_by"] == ok.json()["resolved_by"]  # implicit acknowledgement


def test_tracer_reads_and_notes_but_does_not_take_or_resolve(api, world, settings):
    sid = make_subject(api, world, world["north"])
    alert_id = make_alert(settings, sid, world["north"], "no_communication")
    tracer = world["tracer"]
    assert api.get(f"/api/v1/alerts/{alert_id}", headers=tracer).status_code == 200
    assert api.get("/api/v1/alerts", params={"subject_id": sid}, headers=tracer).status_code == 200
    resolve = api.post(
        f"/api/v1/alerts/{alert_id}/resolve",
        json={"outcome": "traced", "note": "x"},
        headers=tracer,
    )
    assert resolve.status_code == 403
    assert api.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=tracer).status_code == 403
    declare = api.post(f"/api/v1/subjects/{sid}/absconder", json={"note": "x"}, headers=tracer)
    assert declare.status_code == 403
    assert (
        api.post(
            f"/api/v1/alerts/{alert_id}/notes", json={"body": "seen in town"}, headers=tracer
        ).status_code
        == 201
    )
    supervisor = api.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=world["supervisor"])
    assert supervisor.status_code == 200


def test_other_regions_alerts_are_404_and_unlisted(api, world, settings):
    south_subject = make_subject(api, world, world["south"])
    alert_id = make_alert(settings, south_subject, world["south"], "strap_tamper")
    op = world["operator"]
    url = f"/api/v1/alerts/{alert_id}"
    responses = [
        api.get(url, headers=op),
        api.post(f"{url}/acknowledge", headers=op),
        api.post(f"{url}/resolve", json={"outcome": "other", "note": "x"}, headers=op),
        api.post(f"{url}/notes", json={"body": "x"}, headers=op),
        api.post(f"/api/v1/subjects/{south_subject}/absconder", json={"note": "x"}, headers=op),
    ]
    assert [r.status_code for r in responses] == [404] * 5
    # answered exactly like an alert that does not exist
    missing = api.post("/api/v1/alerts/999999999/acknowledge", headers=op).json()["detail"]
    for response in responses[:4]:
        refused = response.json()["detail"]
        assert refused["reason"] == missing["reason"] == "not_found"
        assert refused["message"] == f"alert {alert_id} does not exist"
    for params in ({"subject_id": south_subject}, {"region": world["south"]}, {"limit": 1000}):
        items = api.get("/api/v1/alerts", params=params, headers=op).json()["items"]
        assert alert_id not in [a["id"] for a in items]
    # nothing happened to it, and the south sees it
    south = world["south_operator"]
    seen = api.get(url, headers=south).json()
    assert seen["status"] == "open"
    assert seen["notes"] == []
    assert api.post(f"{url}/acknowledge", headers=south).status_code == 200


def test_declared_absconder(api, world, settings):
    sid = make_subject(api, world, world["north"])
    op = world["operator"]
    url = f"/api/v1/subjects/{sid}/absconder"
    no_note = api.post(url, json={"note": "  "}, headers=op)
    assert no_note.status_code == 422
    assert no_note.json()["detail"]["reason"] == "note_required"
    declared = api.post(url, json={"note": "missed curfew, not at home"}, headers=op)
    assert declared.status_code == 201, declared.text
    body = declared.json()
    assert body["raised"] is True
    again = api.post(url, json={"note": "still missing"}, headers=world["operator2"])
    assert again.status_code == 200
    assert again.json()["raised"] is False
    assert again.json()["alert_id"] == body["alert_id"]

    detail = api.get(f"/api/v1/alerts/{body['alert_id']}", headers=world["tracer"]).json()
    assert (detail["type"], detail["severity"], detail["status"]) == (
        "absconder",
        "critical",
        "open",
    )
    assert [h["action"] for h in detail["history"]].count("declared") == 2
    assert [n["body"] for n in detail["notes"]] == ["missed curfew, not at home", "still missing"]
    queue = api.get(
        "/api/v1/alerts", params={"type": "absconder", "subject_id": sid}, headers=world["tracer"]
    ).json()
    assert [a["id"] for a in queue["items"]] == [body["alert_id"]]
    resolve = f"/api/v1/alerts/{body['alert_id']}/resolve"
    assert api.post(resolve, json={"outcome": "traced"}, headers=op).status_code == 422
    assert (
        api.post(resolve, json={"outcome": "traced", "note": "arrested"}, headers=op).status_code
        == 200
    )
    assert (
        api.post("/api/v1/subjects/999999999/absconder", json={"note": "x"}, headers=op).json()[
            "detail"
        ]["reason"]
        == "subject_not_found"
    )


def victim_zone(api, world, offender: int) -> tuple[int, int]:
    """A victim and the victim zone protecting them from ``offender``."""
    victim = make_subject(api, world, world["north"])
    zone = api.post(
        "/api/v1/zones",
        json={
            "name": "Mary's phone, 4 Elm Close",
            "kind": "victim",
            "radius_m": 500,
            "subject_id": offender,
            "victim_subject_id": victim,
        },
        headers=world["supervisor"],
    )
    assert zone.status_code == 201, zone.text
    return victim, zone.json()["id"]


def test_a_victim_zones_alert_does_not_locate_the_victim(api, world, settings):
    """Queue (everyone) and detail (operators, tracers): no zone name, no distance, the
    offender's position only; supervisors' detail has them, audited as a victim_zone read."""
    offender = make_subject(api, world, world["north"])
    victim, zone = victim_zone(api, world, offender)
    alert = make_alert(
        settings,
        offender,
        world["north"],
        "victim_proximity",
        zone_id=zone,
        lat=-33.95,
        lon=18.47,
        worst_distance_m=120.5,
        details={"zone_name": "Mary's phone, 4 Elm Close"},
    )
    for role in ("operator", "tracer", "supervisor", "admin"):
        page = api.get("/api/v1/alerts", params={"subject_id": offender}, headers=world[role])
        (item,) = page.json()["items"]
        assert item["redacted"] is True and item["worst_distance_m"] is None, item
        assert "Elm" not in page.text
    for role in ("operator", "tracer"):
        detail = api.get(f"/api/v1/alerts/{alert}", headers=world[role])
        assert detail.status_code == 200
        body = detail.json()
        assert (body["lat"], body["lon"]) == (-33.95, 18.47)
        assert body["redacted"] is True and body["worst_distance_m"] is None
        assert "Elm" not in detail.text
    whole = api.get(f"/api/v1/alerts/{alert}", headers=world["supervisor"]).json()
    assert whole["redacted"] is False and whole["worst_distance_m"] == 120.5
    assert whole["details"]["zone_name"] == "Mary's phone, 4 Elm Close"
    with psycopg.connect(settings.database_url) as conn:
        payload = conn.execute(
            "SELECT payload FROM outbox WHERE alert_id = %s", (alert,)
        ).fetchone()[0]
        audited = conn.execute(
            "SELECT role, detail FROM audit_log WHERE action = 'victim_zone' AND subject_id = %s"
            " AND detail->>'via' = 'alert'",
            (victim,),
        ).fetchall()
    assert "zone_name" not in payload["details"], "the outbox (webhooks, MQTT, feed) names it"
    assert (payload["lat"], payload["lon"]) == (-33.95, 18.47)  # tracing units get the offender
    assert [(r[0], r[1]["alert_id"], r[1]["zone_ids"]) for r in audited] == [
        ("supervisor", alert, [zone])
    ]


def test_a_victims_own_alerts_and_absconder_declarations_are_not_theirs(api, world, settings):
    """An alert about a victim subject (never raised by the engine; a misconfiguration) is
    hidden from operators and tracers like another region's, and so is declaring one."""
    offender = make_subject(api, world, world["north"])
    victim, _zone = victim_zone(api, world, offender)
    alert = make_alert(settings, victim, world["north"], "battery_low", lat=-33.9, lon=18.4)
    for role in ("operator", "tracer"):
        assert api.get(f"/api/v1/alerts/{alert}", headers=world[role]).status_code == 404
        page = api.get("/api/v1/alerts", params={"subject_id": victim}, headers=world[role])
        assert page.json()["items"] == []
    note = api.post(f"/api/v1/alerts/{alert}/notes", json={"body": "x"}, headers=world["operator"])
    assert note.status_code == 404
    declared = api.post(
        f"/api/v1/subjects/{victim}/absconder", json={"note": "x"}, headers=world["operator"]
    )
    assert declared.status_code == 404
    assert api.get(f"/api/v1/alerts/{alert}", headers=world["supervisor"]).status_code == 200
