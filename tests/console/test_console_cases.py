"""The tracer's cases page on a phone (issue 16 item 7), in headless Chromium at 390 x 844
against a real API server (`tagwatch api` in its own process) and database.

Subject Musa of region H absconded and was last seen in region O; the absconder alert was
routed to O's tracing unit, so its case is granted to that unit. A tracer of O in that unit logs
in on a phone: he lands on his open cases, opens the case (photo, trail and last known position
on the map), logs a trace attempt, marks the case traced and records the officer and the police
case and warrant numbers (read back after a reload; the API's refusal shown). Over raw HTTP to
the same server, the same tracer gets the case and nothing else of the subject. Screenshots:
/tmp/tagwatch-console (or TAGWATCH_TEST_ARTIFACTS), cases-*.png.
"""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.api.security import hash_password
from tagwatch.store import cases
from tests.console.harness import (
    ARTIFACTS,
    NODE_MODULES,
    browser_missing,
    chromium_path,
    run_driver,
)
from tests.support import fresh_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
DRIVER = Path(__file__).with_name("drive_cases.mjs")
PASSWORD = "cases-console-pass-1"
LAST = {"lon": 30.0440, "lat": -22.3480, "acc": 12.0}


def portrait_png(width: int = 60, height: int = 80) -> bytes:
    """A small real PNG: a head and shoulders in grey on a light background."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            head = (x - width / 2) ** 2 + (y - height * 0.35) ** 2 < (width * 0.22) ** 2
            body = y > height * 0.62 and abs(x - width / 2) < width * 0.4
            row += bytes((90, 98, 110) if head or body else (226, 232, 238))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def case_world(settings) -> dict:
    home, other = fresh_id("cc-h"), fresh_id("cc-o")
    now = datetime.now(UTC)
    opened = now - timedelta(hours=30)
    trail = [
        {"ts": (opened - timedelta(minutes=12 - i)).timestamp(),
         "lon": LAST["lon"] - 0.004 * (10 - i), "lat": LAST["lat"] - 0.002 * (10 - i), "acc": 10.0}
        for i in range(11)
    ]  # fmt: skip
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for region in (home, other):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        (subject,) = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES ('Musa Ndlovu', %s) RETURNING id",
            (home,),
        ).fetchone()
        conn.execute(
            "INSERT INTO subject_photos (subject_id, content_type, data)"
            " VALUES (%s, 'image/png', %s)",
            (subject, portrait_png()),
        )
        (office,) = conn.execute(
            "INSERT INTO offices (name, region_id, lon, lat, service_radius_m)"
            " VALUES ('Musina', %s, 30.04, -22.35, 20000) RETURNING id",
            (other,),
        ).fetchone()
        (unit,) = conn.execute(
            "INSERT INTO tracing_units (name, office_id, region_id)"
            " VALUES ('Musina tracing unit', %s, %s) RETURNING id",
            (office, other),
        ).fetchone()
        routing = {"tracing_units": [{"id": unit, "name": "Musina tracing unit"}]}
        (alert,) = conn.execute(
            "INSERT INTO alerts (subject_id, region_id, type, severity, opened_at, episode_key,"
            " details, routing, lat, lon) VALUES (%s, %s, 'absconder', 'critical', %s, %s, %s,"
            " %s, %s, %s) RETURNING id",
            (subject, home, opened, fresh_id("absconder"),
             Jsonb({"escalated_from": "strap_tamper", "last_known": trail[-1], "trail": trail}),
             Jsonb(routing), LAST["lat"], LAST["lon"]),
        ).fetchone()  # fmt: skip
        case = cases.open_for_alert(conn, alert)
        assert case is not None
        tracer = fresh_id("cc-tracer")
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions, tracing_unit_id)"
            " VALUES (%s, %s, 'tracer', %s, %s)",
            (tracer, hash_password(PASSWORD), [other], unit),
        )
    return {"case": case.case_id, "subject": subject, "alert": alert,
            "tracer": {"username": tracer, "password": PASSWORD}}  # fmt: skip


def test_a_tracer_over_raw_http_gets_the_case_and_nothing_else_of_the_subject(
    console_server, case_world
):
    with httpx.Client(base_url=console_server.url, timeout=10) as client:
        token = client.post("/api/v1/auth/token", data=case_world["tracer"]).json()
        client.headers["Authorization"] = f"Bearer {token['access_token']}"
        case = client.get(f"/api/v1/cases/{case_world['case']}")
        assert case.status_code == 200 and case.json()["access"] == "grant", case.text
        assert client.get(f"/api/v1/cases/{case_world['case']}/photo").status_code == 200
        subject = case_world["subject"]
        for path in (f"/subjects/{subject}", f"/subjects/{subject}/position",
                     f"/subjects/{subject}/track", f"/subjects/{subject}/photo",
                     f"/subjects/{subject}/regions", f"/subjects/{subject}/assignments",
                     f"/alerts/{case_world['alert']}"):  # fmt: skip
            answer = client.get("/api/v1" + path)
            assert answer.status_code == 404, (path, answer.text)
        listed = client.get("/api/v1/subjects", params={"limit": 1000}).json()
        assert subject not in {s["id"] for s in listed}


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_a_tracer_works_his_case_on_a_phone(settings, console_server, case_world):
    result = run_driver(
        DRIVER,
        {
            "url": console_server.url,
            "chromium": chromium_path(),
            "node_modules": str(NODE_MODULES),
            "artifacts": str(ARTIFACTS),
            "tracer": case_world["tracer"],
            "case_id": case_world["case"],
        },
    )
    assert result["page_errors"] == [], result["page_errors"]
    # the one refusal the driver provokes (an officer too long) is the browser's only complaint
    expected = "status of 422 (Unprocessable Entity)"
    assert [e for e in result["console_errors"] if expected not in e] == [], result
    assert sum(expected in e for e in result["console_errors"]) == 1, result["console_errors"]
    assert result["landed_on"] == "cases", "a tracer starts on his cases"
    assert "Musa Ndlovu" in result["list_text"] and "routed to your unit" in result["list_text"]
    assert result["list_fits"] and result["detail_fits"], "wider than the phone's screen"
    assert result["photo_src_scheme"] == "data"
    assert result["track"] == 1 and result["trail_fixes"] == 11 and result["last_known"] == 1
    assert result["map_box"]["width"] >= 380 and result["map_box"]["height"] >= 250
    assert "strap cut" in result["facts"] and "Musina tracing unit" in result["facts"]
    assert "14 Acacia Street" in result["attempt_text"]
    assert "traced (arrested)" in result["traced_facts"] and result["trace_form_gone"]
    details = ["Sgt T. Mokoena", "CAS 118/11/2026", "W-2026-0412"]
    assert result["unit_select"] == 0, "a tracer may not reassign: no unit select"
    assert result["details_values"] == details
    assert all(d in result["details_facts"] for d in details), result["details_facts"]
    assert result["details_fits"]
    assert "officer" in result["details_error"] and "200" in result["details_error"]
    with psycopg.connect(settings.database_url) as conn:
        status, outcome, attempts, *saved = conn.execute(
            "SELECT status, outcome, (SELECT count(*) FROM absconder_case_attempts a"
            " WHERE a.case_id = c.id), officer, police_case_number, warrant_number"
            " FROM absconder_cases c WHERE id = %s",
            (case_world["case"],),
        ).fetchone()
    assert (status, outcome, attempts) == ("traced", "arrested", 1)
    assert saved == details
