"""Absconder cases over the API (issue 16 items 2-3): list, detail, assignment, trace attempts,
traced, closed; subjects' photos; and a tracer of another region who reaches the case his
tracing unit was routed - the case and nothing else of the subject - by a grant that starts
with the routing and ends when the case closes, every step in the audit log.

The world: regions H (the subject's home) and O (where he fled). An office of O serves where he
is; its unit U is where the absconder alert was routed. The alert row is written as the engine
writes one (details and routing), and the case is opened for it by ``store.cases`` as the
engine's repository opens it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.api.security import hash_password
from tagwatch.store import cases as store_cases
from tests.support import fresh_id

pytestmark = pytest.mark.integration

V1 = "/api/v1"
PASSWORD = "cases-pass-1"
OPENED = datetime.now(UTC) - timedelta(days=2)
WHERE = {"ts": OPENED.timestamp() - 60, "lon": 30.04, "lat": -22.35, "acc": 8.0}
TRAIL = [{**WHERE, "ts": WHERE["ts"] - 60 * i, "lon": 30.04 - 0.001 * i} for i in range(5, 0, -1)]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


@dataclass
class World:
    home: str
    other: str
    subject: int
    alert: int
    case: int
    unit: int
    home_unit: int
    headers: dict[str, dict[str, str]]
    users: dict[str, str]


def _user(conn: psycopg.Connection, role: str, regions: list[str], unit: int | None) -> str:
    name = fresh_id(f"cs-{role}")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions, tracing_unit_id)"
        " VALUES (%s, %s, %s, %s, %s)",
        (name, PASSWORD_HASH, role, regions, unit),
    )
    return name


PASSWORD_HASH = hash_password(PASSWORD)


@pytest.fixture(scope="module")
def world(api, settings) -> World:
    home, other = fresh_id("cs-h"), fresh_id("cs-o")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for region in (home, other):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        (subject,) = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES ('Sipho Absconder', %s) RETURNING id",
            (home,),
        ).fetchone()
        units = {}
        for region in (home, other):
            (office,) = conn.execute(
                "INSERT INTO offices (name, region_id, lon, lat, service_radius_m)"
                " VALUES (%s, %s, 30.0, -22.3, 20000) RETURNING id",
                (f"office {region}", region),
            ).fetchone()
            (units[region],) = conn.execute(
                "INSERT INTO tracing_units (name, office_id, region_id) VALUES (%s, %s, %s)"
                " RETURNING id",
                (f"unit {region}", office, region),
            ).fetchone()
        routing = {"tracing_units": [{"id": units[other], "name": f"unit {other}"}]}
        (alert,) = conn.execute(
            "INSERT INTO alerts (subject_id, region_id, type, severity, opened_at, episode_key,"
            " details, routing, lat, lon) VALUES (%s, %s, 'absconder', 'critical', %s, %s, %s,"
            " %s, %s, %s) RETURNING id",
            (subject, home, OPENED, fresh_id("absconder"),
             Jsonb({"escalated_from": "no_communication", "last_known": WHERE, "trail": TRAIL}),
             Jsonb(routing), WHERE["lat"], WHERE["lon"]),
        ).fetchone()  # fmt: skip
        opened = store_cases.open_for_alert(conn, alert)
        assert opened is not None
        users = {
            "operator": _user(conn, "operator", [home], None),
            "supervisor": _user(conn, "supervisor", [home], None),
            "admin": _user(conn, "admin", [home, other], None),
            "tracer": _user(conn, "tracer", [other], units[other]),  # O's unit: the grant
            "tracer_no_unit": _user(conn, "tracer", [other], None),
            "tracer_home": _user(conn, "tracer", [home], None),
            "operator_other": _user(conn, "operator", [other], None),
        }
    headers = {}
    for key, name in users.items():
        answer = api.post(f"{V1}/auth/token", data={"username": name, "password": PASSWORD})
        headers[key] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    return World(home, other, subject, alert, opened.case_id, units[other], units[home],
                 headers, users)  # fmt: skip


def _audit(settings, username: str) -> list[tuple[str, int | None, dict[str, Any]]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT action, subject_id, detail FROM audit_log WHERE username = %s ORDER BY id",
            (username,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_the_home_region_lists_and_reads_the_case(api, settings, world: World):
    h = world.headers["operator"]
    listed = api.get(f"{V1}/cases", params={"status": "outstanding"}, headers=h)
    assert listed.status_code == 200, listed.text
    (item,) = [c for c in listed.json() if c["id"] == world.case]
    assert (item["cause"], item["status"], item["region_id"]) == ("silence", "outstanding",
                                                                  world.home)  # fmt: skip
    assert item["tracing_unit_id"] == world.unit and item["access"] == "region"
    assert item["last_known"]["lat"] == WHERE["lat"] and 1.9 < item["days_at_large"] < 2.1
    assert api.get(f"{V1}/cases", params={"region": world.other}, headers=h).json() == []
    by_unit = api.get(f"{V1}/cases", params={"unit": world.unit}, headers=h).json()
    assert [c["id"] for c in by_unit] == [world.case]
    detail = api.get(f"{V1}/cases/{world.case}", params={"reason": "review"}, headers=h)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["subject_name"] == "Sipho Absconder" and body["alert_id"] == world.alert
    assert [a["id"] for a in body["alerts"]] == [world.alert]
    assert len(body["trail"]) == len(TRAIL) and body["photo_url"] is None
    (grant,) = body["grants"]
    assert grant["tracing_unit_id"] == world.unit and grant["unit_region_id"] == world.other
    assert grant["granted_by"] == "engine" and grant["revoked_at"] is None
    # another region's operator: as a case that does not exist
    other = api.get(f"{V1}/cases/{world.case}", headers=world.headers["operator_other"])
    missing = api.get(f"{V1}/cases/9000000000000", headers=world.headers["operator_other"])
    assert other.status_code == missing.status_code == 404
    assert world.case not in {c["id"] for c in api.get(
        f"{V1}/cases", headers=world.headers["operator_other"]).json()}  # fmt: skip
    actions = [(a, s, d.get("via"), d.get("reason")) for a, s, d in
               _audit(settings, world.users["operator"])]  # fmt: skip
    assert ("case_read", world.subject, "region", "review") in actions
    assert any(a == "case_list" for a, *_ in actions)


def test_photo_rules_and_audited_reads(api, settings, world: World):
    sup = world.headers["supervisor"]
    path = f"{V1}/subjects/{world.subject}/photo"
    put = lambda body, kind: api.put(path, content=body, headers={**sup, "Content-Type": kind})  # noqa: E731
    assert put(PNG, "image/gif").status_code == 415
    assert put(JPEG, "image/png").status_code == 422, "the bytes must be what is declared"
    assert put(b"<svg/>", "image/webp").status_code == 422
    assert put(PNG + b"\x00" * 2_000_000, "image/png").status_code == 413
    assert api.put(path, content=PNG, headers={**world.headers["operator"],
                   "Content-Type": "image/png"}).status_code == 403  # fmt: skip
    stored = put(PNG, "image/png")
    assert stored.status_code == 200, stored.text
    assert stored.json()["bytes"] == len(PNG)
    got = api.get(path, headers=world.headers["operator"])
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png" and "no-store" in got.headers["cache-control"]
    via_case = api.get(f"{V1}/cases/{world.case}/photo", headers=world.headers["operator"])
    assert via_case.content == PNG
    assert api.get(f"{V1}/cases/{world.case}", headers=sup).json()["photo_url"] == (
        f"/api/v1/cases/{world.case}/photo"
    )
    assert ("subject_photo_put", world.subject) in [
        (a, s) for a, s, _ in _audit(settings, world.users["supervisor"])
    ]
    reads = [d.get("via") for a, s, d in _audit(settings, world.users["operator"])
             if a == "subject_photo" and s == world.subject]  # fmt: skip
    assert reads == ["subject", "region"]


def test_a_tracer_of_another_region_works_the_case_by_the_grant_until_it_closes(
    api, settings, world: World
):
    t = world.headers["tracer"]
    mine = api.get(f"{V1}/cases", params={"mine": "true"}, headers=t)
    assert [(c["id"], c["access"]) for c in mine.json()] == [(world.case, "grant")]
    detail = api.get(f"{V1}/cases/{world.case}", headers=t)
    assert detail.status_code == 200 and detail.json()["subject_name"] == "Sipho Absconder"
    # the case and nothing else of the subject
    for path in (f"/subjects/{world.subject}", f"/subjects/{world.subject}/position",
                 f"/subjects/{world.subject}/track", f"/subjects/{world.subject}/photo",
                 f"/alerts/{world.alert}"):  # fmt: skip
        assert api.get(V1 + path, headers=t).status_code == 404, path
    # a tracer of O without the unit, and every tracer's PATCH of the unit
    assert (
        api.get(f"{V1}/cases/{world.case}", headers=world.headers["tracer_no_unit"]).status_code
        == 404
    )
    assert api.get(f"{V1}/cases", params={"mine": "true"},
                   headers=world.headers["tracer_no_unit"]).json() == []  # fmt: skip
    refused = api.patch(f"{V1}/cases/{world.case}", json={"tracing_unit_id": None}, headers=t)
    assert refused.status_code == 403
    # he records the police case number, an attempt, and marks the case traced
    patched = api.patch(f"{V1}/cases/{world.case}", json={"police_case_number": "CAS 12/3/2025",
                        "officer": "Sgt Dlamini"}, headers=t)  # fmt: skip
    assert patched.status_code == 200 and patched.json()["officer"] == "Sgt Dlamini"
    bad = api.post(f"{V1}/cases/{world.case}/attempts", json={"method": "visit", "outcome": "x"},
                   headers=t)  # fmt: skip
    assert bad.status_code == 422, "an attempt says where"
    attempt = api.post(
        f"{V1}/cases/{world.case}/attempts",
        json={"method": "home visit", "outcome": "not home; mother says he went north",
              "lon": 30.05, "lat": -22.34},
        headers=t,
    )  # fmt: skip
    assert attempt.status_code == 201, attempt.text
    traced_at = datetime.now(UTC) - timedelta(minutes=5)
    trace = f"{V1}/cases/{world.case}/trace"
    early = (OPENED - timedelta(days=1)).isoformat()
    too_early = api.post(trace, json={"outcome": "arrested", "traced_at": early}, headers=t)
    assert too_early.status_code == 422
    when = traced_at.isoformat()
    traced = api.post(trace, json={"outcome": "arrested", "traced_at": when}, headers=t)
    assert traced.status_code == 200, traced.text
    body = traced.json()
    assert (body["status"], body["outcome"]) == ("traced", "arrested")
    assert [a["by_username"] for a in body["attempts"]] == [world.users["tracer"]]
    assert api.post(f"{V1}/cases/{world.case}/trace", json={"outcome": "other"},
                    headers=t).status_code == 409  # fmt: skip
    assert api.post(f"{V1}/cases/{world.case}/close", headers=t).status_code == 403
    # the home region closes it: the grant ends, and with it the tracer's access
    closed = api.post(f"{V1}/cases/{world.case}/close", headers=world.headers["operator"])
    assert closed.status_code == 200, closed.text
    (grant,) = closed.json()["grants"]
    assert grant["revoke_reason"] == "closed" and grant["revoked_by"] == world.users["operator"]
    assert api.get(f"{V1}/cases/{world.case}", headers=t).status_code == 404
    assert api.get(f"{V1}/cases/{world.case}/photo", headers=t).status_code == 404
    assert api.get(f"{V1}/cases", params={"mine": "true"}, headers=t).json() == []
    assert api.patch(f"{V1}/cases/{world.case}", json={"officer": "x"},
                     headers=world.headers["operator"]).status_code == 409  # fmt: skip
    # audited: his reads name the grant; the close names the grant's end
    via = {
        d.get("via") for a, s, d in _audit(settings, world.users["tracer"]) if s == world.subject
    }
    assert via == {"grant"}
    ends = [d for a, s, d in _audit(settings, world.users["operator"]) if a == "case_grant_end"]
    assert [(d["case_id"], d["tracing_unit_id"]) for d in ends] == [(world.case, world.unit)]


def test_reassigning_moves_the_grant_and_users_carry_a_tracing_unit(api, settings, world: World):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        (alert,) = conn.execute(
            "INSERT INTO alerts (subject_id, region_id, type, severity, opened_at, episode_key,"
            " details) VALUES (%s, %s, 'absconder', 'critical', now(), %s, %s) RETURNING id",
            (world.subject, world.home, fresh_id("absconder"), Jsonb({"declared_by": "op"})),
        ).fetchone()
        opened = store_cases.open_for_alert(conn, alert, "op")
    assert opened is not None and not opened.joined  # the first case is closed: a new one
    h = world.headers["operator"]
    case = api.get(f"{V1}/cases/{opened.case_id}", headers=h).json()
    assert (case["cause"], case["tracing_unit_id"], case["grants"]) == ("declared", None, [])
    assert api.patch(f"{V1}/cases/{opened.case_id}", json={"tracing_unit_id": 9_000_000_000_000},
                     headers=h).status_code == 422  # fmt: skip
    for unit in (world.unit, world.home_unit):
        moved = api.patch(f"{V1}/cases/{opened.case_id}", json={"tracing_unit_id": unit}, headers=h)
        assert moved.status_code == 200, moved.text
    grants = moved.json()["grants"]
    assert [(g["tracing_unit_id"], g["revoke_reason"]) for g in grants] == [
        (world.unit, "reassigned"), (world.home_unit, None)]  # fmt: skip
    actions = [a for a, s, d in _audit(settings, world.users["operator"])
               if d.get("case_id") == opened.case_id and a.startswith("case_grant")]  # fmt: skip
    assert actions == ["case_grant_start", "case_grant_end", "case_grant_start"]
    # the users admin API sets a tracer's unit (one of the admin's regions)
    admin = world.headers["admin"]
    made = api.post(f"{V1}/users", json={"username": fresh_id("cs-new"), "role": "tracer",
                    "regions": [world.other], "password": PASSWORD, "tracing_unit_id": world.unit},
                    headers=admin)  # fmt: skip
    assert made.status_code == 201 and made.json()["tracing_unit_id"] == world.unit, made.text
    cleared = api.patch(f"{V1}/users/{made.json()['id']}", json={"tracing_unit_id": None},
                        headers=admin)  # fmt: skip
    assert cleared.status_code == 200 and cleared.json()["tracing_unit_id"] is None
    unknown = api.patch(f"{V1}/users/{made.json()['id']}",
                        json={"tracing_unit_id": 9_000_000_000_000}, headers=admin)  # fmt: skip
    assert unknown.status_code == 422
