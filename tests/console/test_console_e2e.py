"""The console in a real browser (Debian's headless Chromium, driven by playwright-core from
node_modules) against a real API server and database.

An operator logs in; an alert written to the database the engine's way (row, history, outbox)
appears in the queue over the WebSocket; opened, it shows the subject's zone, the track with its
accuracy circles and the last position on the map; acknowledged, its status changes in the
detail and in the queue; resolving without an outcome shows the API's reason, with one it
resolves. The subject page draws zones and the track over a chosen range. A supervisor draws a
zone (a self-intersecting one is refused with the geofence core's reason) and opens the reports
page with its chart and CSV. Every page is screenshotted to /tmp/tagwatch-console (or
TAGWATCH_TEST_ARTIFACTS).

Skipped, with the reason, when Chromium, node or node_modules are missing: scripts/setup.sh
installs them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts.engine import enqueue
from api.security import hash_password
from tests.console.conftest import ARTIFACTS, NODE_MODULES, browser_missing, chromium_path
from tests.support import fresh_id, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
DRIVER = Path(__file__).with_name("drive.mjs")
PASSWORD = "console-pass-word-1"
# a small town block: the subject walks east through an exclusion zone
LAT, LON = -33.9249, 18.4241


def _user(conn: psycopg.Connection, role: str, regions: list[str]) -> dict[str, str]:
    username = fresh_id(f"console-{role}")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
        (username, hash_password(PASSWORD), role, regions),
    )
    return {"username": username, "password": PASSWORD}


@pytest.fixture
def world(settings, console_server):
    """A region, a subject wearing a tag with an hour of fixes, an exclusion zone, and users."""
    region = fresh_id("cons")
    device = fresh_id("tag")
    now = datetime.now(UTC)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        admin = _user(conn, "admin", ["*"])
        operator = _user(conn, "operator", [region])
        supervisor = _user(conn, "supervisor", [region])
    with httpx.Client(base_url=console_server.url, timeout=10) as client:
        token = client.post("/api/v1/auth/token", data=admin).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.post("/api/v1/regions", json={"id": region, "name": region}).is_success
        created = client.post(
            "/api/v1/subjects",
            json={"name": "Console Test Subject", "region_id": region, "case_ref": fresh_id("c")},
        )
        assert created.status_code == 201, created.text
        subject = created.json()
        # The API may answer before its transaction is visible (see the report): wait for it.
        assert wait_for(
            lambda: client.get(f"/api/v1/subjects/{subject['id']}").status_code == 200, 5
        )
        zone = client.post(
            "/api/v1/zones",
            json={
                "name": "victim's home",
                "kind": "exclusion",
                "subject_id": subject["id"],
                "geometry": {"type": "Point", "coordinates": [LON + 0.004, LAT]},
                "radius_m": 150,
                "buffer_m": 100,
            },
        )
        assert zone.status_code == 201, zone.text
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, subject["id"], now - timedelta(days=2)),
        )
        for minute in range(40):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, %s)",
                (
                    device,
                    now - timedelta(minutes=40 - minute),
                    LAT + 0.0003 * math.sin(minute / 6),
                    LON + 0.00012 * minute,
                    8 + (minute % 4) * 6,
                ),
            )
    return {
        "region": region,
        "device": device,
        "subject_id": subject["id"],
        "zone_id": zone.json()["id"],
        "operator": operator,
        "supervisor": supervisor,
        "now": now,
    }


def _insert_alert(settings, world) -> int:
    """An exclusion-zone entry, written as the engine writes one: row, history, outbox."""
    now = world["now"]
    with psycopg.connect(settings.database_url) as conn:
        alert_id = conn.execute(
            "INSERT INTO alerts (subject_id, region_id, device_id, zone_id, type, severity,"
            " opened_at, first_fix_at, last_fix_at, lat, lon, fix_count, worst_distance_m,"
            " episode_key, details) VALUES (%s, %s, %s, %s, 'exclusion_zone_entry', 'critical',"
            " %s, %s, %s, %s, %s, 6, 42.5, %s, %s) RETURNING id",
            (
                world["subject_id"],
                world["region"],
                world["device"],
                world["zone_id"],
                now - timedelta(minutes=8),
                now - timedelta(minutes=8),
                now - timedelta(minutes=2),
                LAT,
                LON + 0.0038,
                fresh_id("episode"),
                Jsonb({"dwell_fixes": 3}),
            ),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO alert_history (alert_id, actor, action) VALUES (%s, 'engine', 'opened')",
            (alert_id,),
        )
        enqueue(conn, alert_id, world["region"], "exclusion_zone_entry", "critical", "opened")
    return int(alert_id)


def _drive(config: dict, on_wait) -> dict:
    """Run drive.mjs, answering its questions; return its result."""
    process = subprocess.Popen(
        ["node", str(DRIVER)],
        env={**os.environ, "DRIVE_CONFIG": json.dumps(config)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    result: dict | None = None
    try:
        for line in process.stdout:
            message = json.loads(line)
            if "wait" in message:
                process.stdin.write(json.dumps(on_wait(message["wait"])) + "\n")
                process.stdin.flush()
            elif "result" in message:
                result = message["result"]
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    stderr = process.stderr.read() if process.stderr else ""
    assert result is not None, (
        f"the browser driver gave no result (exit {process.returncode}):\n{stderr}"
    )
    assert not result.get("error"), f"{result['error']}\nscreenshots: {result['screenshots']}"
    assert process.returncode == 0, stderr
    return result


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_operator_works_an_alert_on_the_map_and_a_supervisor_draws_a_zone(
    settings, console_server, world
):
    inserted: list[int] = []

    def on_wait(what: str) -> dict:
        assert what == "alert"
        inserted.append(_insert_alert(settings, world))
        return {"alert_id": inserted[-1]}

    result = _drive(
        {
            "url": console_server.url,
            "chromium": chromium_path(),
            "node_modules": str(NODE_MODULES),
            "artifacts": str(ARTIFACTS),
            "operator": world["operator"],
            "supervisor": world["supervisor"],
            "subject_id": world["subject_id"],
        },
        on_wait,
    )
    (alert_id,) = inserted
    assert result["page_errors"] == [], result["page_errors"]
    assert result["console_errors"] == [], result["console_errors"]

    # login: a wrong password is refused on the form; the token lives in sessionStorage only
    assert "Wrong username or password" in result["wrong_password_message"]
    assert result["token_in_session_storage"] is True
    assert result["token_in_local_storage"] is False
    assert world["operator"]["username"] in result["whoami"]
    assert "operator" in result["whoami"]
    assert result["reports_tab_hidden"] is True  # reports are for supervisors and admins

    # the alert came over the WebSocket (nothing read the list meanwhile)
    assert result["list_reads_while_waiting"] == 0
    assert alert_id in result["queue_order"]
    assert result["row_severity"] == "critical"
    assert "exclusion zone entry" in result["row_text"]
    assert "Console Test Subject" in result["row_text"]
    assert result["steps"]["alert_arrived"] < 10_000

    # the map: the exclusion zone (and its warning band), the track, accuracy circles, fixes,
    # the alert's position and the last known position, on a plain background (no tiles)
    drawn = result["map"]
    assert drawn["exclusion_zones"] >= 1
    assert drawn["tracks"] == 1
    # a polyline through the fixes; Leaflet simplifies it by zoom, so only "several" is certain
    assert drawn["track_d"].count("L") >= 2
    assert drawn["accuracy_circles"] >= 10
    assert drawn["fixes"] >= 10
    assert drawn["alert_marker"] == 1
    assert drawn["last_position"] == 1
    assert drawn["tiles"] == 0
    assert "42 m" in result["detail_text"] or "43 m" in result["detail_text"]

    # acknowledge, then a refused resolve (the reason shown), then resolved, then a note
    assert result["after_ack_status"] == "acknowledged"
    assert world["operator"]["username"] in result["after_ack_message"]
    assert result["resolve_refusal"].startswith("422")
    assert "outcome" in result["resolve_refusal"]
    assert "closed from the console test" in result["notes_text"]
    assert "resolved" in result["history_text"]
    assert result["resolved_row_in_queue"] == 0  # resolved alerts leave the queue
    with psycopg.connect(settings.database_url) as conn:
        status, outcome, acked_by, resolved_by = conn.execute(
            "SELECT status, outcome, acknowledged_by, resolved_by FROM alerts WHERE id = %s",
            (alert_id,),
        ).fetchone()
        notes = [
            r[0]
            for r in conn.execute(
                "SELECT body FROM alert_notes WHERE alert_id = %s ORDER BY id", (alert_id,)
            )
        ]
    assert (status, outcome) == ("resolved", "false_alarm")
    assert acked_by == resolved_by == world["operator"]["username"]
    assert notes[-1] == "closed from the console test"

    # the subject page: zone, track and last position; an empty range clears the track
    assert result["subject_map"]["zones"] >= 1
    assert result["subject_map"]["tracks"] == 1
    assert result["subject_map"]["last_position"] == 1
    assert result["subject_status"].startswith("40 fixes")
    assert result["empty_range_tracks"] == 0

    # zones: operators may not draw; a supervisor's bow-tie is refused with the reason, the
    # square is stored for the subject with the curfew schedule the form proposes
    assert result["operator_zone_save_disabled"] is True
    assert result["draft_vertices"] == 4
    assert result["bowtie_refusal"].startswith("422")
    zone_id = int(result["saved_zone_hash"].rsplit("/", 1)[1])
    with psycopg.connect(settings.database_url) as conn:
        name, kind, geometry, subject_id, schedule = conn.execute(
            "SELECT name, kind, geometry, subject_id, schedule FROM zones WHERE id = %s",
            (zone_id,),
        ).fetchone()
    assert (name, kind, subject_id) == ("console test square", "curfew", world["subject_id"])
    assert geometry["type"] == "Polygon"
    assert len(geometry["coordinates"][0]) == 5
    assert geometry["coordinates"][0][0] == geometry["coordinates"][0][-1]
    assert schedule["weekly"][0]["start"] == "19:00"

    # reports: the chart plots the month's violations by type (the alert above is one); the
    # CSV comes from the server
    if result["report_status"] is None:
        assert result["chart_bars"] >= 1
        assert "exclusion zone entry" in result["chart_labels"]
        assert result["csv_filename"].endswith(".csv")
        assert "violations" in Path(result["csv_path"]).read_text()
    else:  # the reports routes are not deployed on this server
        assert "not available" in result["report_status"]

    for screenshot in result["screenshots"]:
        assert Path(screenshot).stat().st_size > 10_000, screenshot
