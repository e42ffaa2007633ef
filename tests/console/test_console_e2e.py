"""The console in a real browser (Debian's headless Chromium, driven by playwright-core from
node_modules) against a real API server and database.

Nothing is written to the database behind the platform's back: a tag is provisioned with its own
broker account, held by a subject of the operator's region who has an exclusion zone, and a real
`tagwatch ingest` stores what the tag publishes over MQTT with its own credentials.

An operator logs in; the tag's first fixes put its subject on the live positions layer of the
queue's map (fresh, with a tooltip, counted in the header); the tag walks into the zone, the
engine raises the entry alert, and it arrives in the queue over the WebSocket (a frame of the
feed carries it; nothing read the list meanwhile) while the dot follows the tag into the zone.
Opened, the alert shows the zone, the track with its accuracy circles and the last position on
the map; acknowledged, its status changes in the detail and in the queue; resolving without an
outcome shows the API's reason, with one it resolves. A click on the subject's dot opens the
subject page with zones and the track over a chosen range. A supervisor draws a zone (a
self-intersecting one is refused with the geofence core's reason) and opens the reports page
with its chart and CSV, and the absconder template of last month (table, chart, PDF; its two
cases are written with SQL, as opening cases is another part of issue 16). Every page is
screenshotted to /tmp/tagwatch-console (or TAGWATCH_TEST_ARTIFACTS).

Skipped, with the reason, when Chromium, node or node_modules are missing: scripts/setup.sh
installs them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from tagwatch.api.security import hash_password
from tagwatch.store.absconder_reports import insert_case_row
from tests.console.conftest import ARTIFACTS, NODE_MODULES, browser_missing, chromium_path
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
DRIVER = Path(__file__).with_name("drive.mjs")
PASSWORD = "console-pass-word-1"
# a small town block: the subject walks east into an exclusion zone
LAT, LON = -33.9249, 18.4241
ZONE_EAST_M = 0.004 * 111_320.0 * math.cos(math.radians(LAT))  # the zone's centre, 370 m east
# metres east of the start: the approach stays clear of the warning band (150 m + 100 m around
# the centre); then through the band and 120 m into the zone, where the tag stays
APPROACH_M = [10.0 * i for i in range(12)]
INTO_ZONE_M = [130.0, 150, 170, 190, 210, 250, 270, 290, 310, 320, 325, 330, 330]
FIXES = len(APPROACH_M) + len(INTO_ZONE_M)


def _user(conn: psycopg.Connection, role: str, regions: list[str]) -> dict[str, str]:
    username = fresh_id(f"console-{role}")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
        (username, hash_password(PASSWORD), role, regions),
    )
    return {"username": username, "password": PASSWORD}


@pytest.fixture
def world(settings, console_server, provision, running_ingest):
    """A region; a tag provisioned with its own broker account, held by a subject of the region
    with an exclusion zone 370 m east; an operator and a supervisor of the region."""
    region = fresh_id("cons")
    device = fresh_id("tag")
    password = provision(device)  # the device row and its broker account
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
        assigned = client.post(
            f"/api/v1/subjects/{subject['id']}/assignments",
            json={
                "device_id": device,
                "role": "offender",
                "from": (now - timedelta(hours=1)).isoformat(),
            },
        )
        assert assigned.status_code == 201, assigned.text
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
    # Two absconder cases of last month for the reports page's absconder template, written
    # straight into the table: opening cases from absconder alerts is another part of issue 16
    first = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=8, minute=0)
    with psycopg.connect(settings.database_url) as conn:
        for opened, traced, outcome in [
            (first + timedelta(days=2), first + timedelta(days=5), "arrested"),
            (first + timedelta(days=9), first + timedelta(days=19), "returned_to_supervision"),
        ]:
            insert_case_row(conn, subject["id"], region, "strap_tamper", opened, traced, outcome)
    return {
        "region": region,
        "device": device,
        "password": password,
        "subject_id": subject["id"],
        "zone_id": zone.json()["id"],
        "operator": operator,
        "supervisor": supervisor,
        "ingest": running_ingest,
    }


def _fix(east_m: float, ts: float, index: int) -> dict:
    """A fix ``east_m`` metres east of the start, with a little north-south wobble."""
    return {
        "ts": round(ts, 3),
        "lat": LAT + 0.00002 * math.sin(index / 3),
        "lon": LON + east_m / (111_320.0 * math.cos(math.radians(LAT))),
        "acc": 6 + index % 4,
        "seq": index + 1,
        "spd": 1.4,
        "batt": 77,
    }


class Tag:
    """The tag: publishes over MQTT with its own credentials, on its own topic."""

    def __init__(self, settings, world) -> None:
        self.settings = settings
        self.world = world
        self.sent: list[dict] = []

    def publish(self, fixes: list[dict]) -> None:
        device = self.world["device"]
        client = connect(self.settings.mqtt_device_url, device, self.world["password"])
        try:
            publish_all(client, [(f"em/v1/{device}/fix", json.dumps(f).encode()) for f in fixes])
        finally:
            client.disconnect()
            client.loop_stop()
        self.sent.extend(fixes)
        stored = lambda: count(  # noqa: E731
            self.settings.database_url,
            "SELECT count(*) FROM fixes WHERE device_id = %s",
            (device,),
        )
        assert wait_for(lambda: stored() == len(self.sent), 20), (
            f"ingest stored {stored()} of {len(self.sent)} fixes:\n"
            + self.world["ingest"].log()[-3000:]
        )

    def approach(self) -> dict:
        """Twelve fixes 10 s apart, the last a minute old, well outside the warning band."""
        now = time.time()
        start = now - 60 - 10 * (len(APPROACH_M) - 1)
        self.publish([_fix(m, start + 10 * i, i) for i, m in enumerate(APPROACH_M)])
        return {"subjects": 1, "fixes": len(self.sent)}

    def into_the_zone(self) -> int:
        """Through the band into the zone, 5 s apart, after the approach (ending at most a few
        seconds ahead of the clock, well within ingest's tolerance); the entry alert's id."""
        last = self.sent[-1]["ts"]
        start = max(time.time() - 5 * len(INTO_ZONE_M), last + 5)
        offset = len(self.sent)
        self.publish([_fix(m, start + 5 * i, offset + i) for i, m in enumerate(INTO_ZONE_M)])
        subject = self.world["subject_id"]
        query = "SELECT id FROM alerts WHERE subject_id = %s AND type = 'exclusion_zone_entry'"

        def raised() -> bool:
            with psycopg.connect(self.settings.database_url) as conn:
                return conn.execute(query, (subject,)).fetchone() is not None

        assert wait_for(raised, 20), self.world["ingest"].log()[-3000:]
        with psycopg.connect(self.settings.database_url) as conn:
            return int(conn.execute(query, (subject,)).fetchone()[0])


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
def test_operator_works_a_live_alert_from_a_real_publish_and_a_supervisor_draws_a_zone(
    settings, console_server, world
):
    tag = Tag(settings, world)
    inserted: list[int] = []

    def on_wait(what: str) -> dict:
        if what == "approach":
            return tag.approach()
        assert what == "alert"
        inserted.append(tag.into_the_zone())
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
    # operators get the reports page for the absconder template (compliance is not theirs)
    assert result["reports_tab_hidden"] is False

    # the positions layer: nobody on the map before the tag reported; then its subject, fresh,
    # with a tooltip (name, age, accuracy), counted in the header; the layer has a switch
    assert "0 subjects on the map" in result["positions_count_before"]
    assert "Positions (live)" in result["positions_layer_switch"]
    assert "1 subject on the map" in result["positions_count"]
    assert result["positions_markers"] == 1  # only the operator's region
    before, after = result["position_before"], result["position_after"]
    last_approach = tag.sent[len(APPROACH_M) - 1]
    assert math.isclose(before["lon"], last_approach["lon"], abs_tol=1e-9)
    assert math.isclose(before["lat"], last_approach["lat"], abs_tol=1e-9)
    assert "tw-pos-fresh" in before["class"]
    assert 55 <= before["age_s"] < 120  # the last approach fix was a minute old
    assert "Console Test Subject" in result["position_tooltip"]
    assert "ago" in result["position_tooltip"]
    assert f"±{last_approach['acc']} m" in result["position_tooltip"]
    # ... and the dot followed the tag into the zone: the last fix published
    assert math.isclose(after["lon"], tag.sent[-1]["lon"], abs_tol=1e-9)
    assert after["lon"] > before["lon"]
    assert "tw-pos-fresh" in after["class"]
    assert result["steps"]["position_moved"] < 10_000
    # every refresh of the layer is one audited read of the subjects on it
    with psycopg.connect(settings.database_url) as conn:
        reads = conn.execute(
            "SELECT role, subject_id, detail FROM audit_log"
            " WHERE username = %s AND action = 'positions_overview' ORDER BY id",
            (world["operator"]["username"],),
        ).fetchall()
    assert len(reads) >= 3
    assert {(role, subject_id) for role, subject_id, _ in reads} == {("operator", None)}
    assert reads[-1][2]["subject_ids"] == [world["subject_id"]]
    assert reads[-1][2]["reason"] == "operator console: live map"

    # the alert was raised by the engine from the published fixes, and came over the
    # WebSocket: a frame of the feed carried it, and nothing read the list meanwhile
    with psycopg.connect(settings.database_url) as conn:
        device, late, fix_count, worst = conn.execute(
            "SELECT device_id, late, fix_count, worst_distance_m FROM alerts WHERE id = %s",
            (alert_id,),
        ).fetchone()
    assert (device, late) == (world["device"], False)
    assert fix_count >= 4
    assert worst < -90  # 120 m inside the 150 m circle at the deepest
    assert {"alert_id": alert_id, "event": "opened", "type": "exclusion_zone_entry"} in result[
        "ws_alert_events"
    ], result["ws_alert_events"]
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
    assert f"{math.floor(worst + 0.5)} m" in result["detail_text"]  # JavaScript's Math.round

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

    # the subject page, reached by a click on the dot: zone, every published fix as the track,
    # the last position; an empty range clears the track; the live layer stays on the queue
    assert result["positions_layer_left_with_the_queue"] is True
    assert result["subject_map"]["zones"] >= 1
    assert result["subject_map"]["tracks"] == 1
    assert result["subject_map"]["last_position"] == 1
    assert result["subject_status"].startswith(f"{FIXES} fixes")
    # the operator's "locate now", listed on the subject's page with its state
    assert result["subject_commands"][0]["state"] in {"queued", "sent", "expired"}
    assert result["subject_commands"][0]["text"].startswith("locate now")
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

    # the absconder template of last month: the region's column and the national one, two new
    # and two traced (strap tamper), the chart with their bars, and the PDF from the server
    template = result["template"]
    assert template["columns"] == [world["region"], "National"], template
    assert template["new"] == ["2", "2"] and template["traced"] == ["2", "2"], template
    assert template["chart_bars"] >= 4, template
    assert template["pdf_filename"].endswith(".pdf")
    assert Path(template["pdf_path"]).read_bytes().startswith(b"%PDF")

    for screenshot in result["screenshots"]:
        assert Path(screenshot).stat().st_size > 10_000, screenshot
