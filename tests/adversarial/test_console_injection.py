"""Attack: script injection into the operator console through the names it shows.

Whoever may name a subject, a zone or a region, or write a note (a supervisor, an operator, a
compromised account, a record imported from elsewhere), sets them through the API to HTML that
runs script when parsed: ``<img src=x onerror=...>``, ``<script>``, ``"><svg onload=...>``.
The handlers would set ``window.__pwned``, fetch ``/pwned/...`` and open a dialog. A real tag
then walks into the zone over MQTT, so that an alert, a live position and a track show them
too, and a supervisor opens the console in headless Chromium: the queue, the zone's and the
dot's tooltips on the map, the alert, the subjects list, the subject's page and its track's
tooltip, the zone's page and the reports' region picker.

Nothing may run (no flag, no request to /pwned, no dialog, no policy violation, no element a
payload would create), and every payload must be on the page as the text it is. The views are
visited twice: with the server's Content-Security-Policy enforced, and with the policy bypassed
in the browser, to show that the page itself writes text (the policy is the second line, not the
only one). Screenshots: /tmp/tagwatch-console/injection-*.png (or TAGWATCH_TEST_ARTIFACTS).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from tagwatch.api.security import hash_password
from tests.console.harness import (
    ARTIFACTS,
    NODE_MODULES,
    browser_missing,
    chromium_path,
    console_server,  # noqa: F401 - the real API server fixture
    run_driver,
)
from tests.console.test_console_e2e import LAT, LON, Tag
from tests.support import fresh_id, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]
DRIVER = Path(__file__).resolve().parents[1] / "console" / "drive_injection.mjs"
PASSWORD = "injection-pass-word-1"


def payload(tag: str) -> dict[str, str]:
    """Three ways HTML runs script, each marked with where it was planted."""
    run = f"window.__pwned='{tag}';fetch('/pwned/{tag}')"
    return {
        "img": f'<img src=x onerror="{run}">',
        "script": f"<script>{run}</script>",
        "svg": f'"><svg onload="{run}">',
    }


SUBJECT = payload("subject")
ZONE = payload("zone")
SUBJECT_NAME = f"{SUBJECT['svg']} {SUBJECT['img']}"
CASE_REF = payload("case")["script"]
GROUP = "<img src=x onerror=alert(document.domain)>"
ZONE_NAME = f"{ZONE['img']}{ZONE['script']}"
REGION_NAME = payload("region")["img"]
NOTE = f"{payload('note')['script']} {payload('note')['svg']}"


def _user(conn: psycopg.Connection, role: str, regions: list[str]) -> dict[str, str]:
    username = fresh_id(f"inj-{role}")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
        (username, hash_password(PASSWORD), role, regions),
    )
    return {"username": username, "password": PASSWORD}


@contextmanager
def _client(url: str, user: dict[str, str]) -> Iterator[httpx.Client]:
    """Raw HTTP to the API as ``user``."""
    with httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post("/api/v1/auth/token", data=user)
        assert answer.status_code == 200, answer.text
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


@pytest.fixture
def planted(settings, console_server, provision, running_ingest):  # noqa: F811
    """A region, a subject and its exclusion zone named with payloads (through the API, as an
    attacker with a supervisor's rights would), a tag that walks into the zone over MQTT (the
    engine raises the alert), and a note with a payload on that alert."""
    region = fresh_id("inj")
    device = fresh_id("tag")
    password = provision(device)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        admin = _user(conn, "admin", ["*"])
        supervisor = _user(conn, "supervisor", [region])
    with _client(console_server.url, admin) as api:
        created = api.post("/api/v1/regions", json={"id": region, "name": REGION_NAME})
        assert created.status_code == 201, created.text
    with _client(console_server.url, supervisor) as api:
        subject = api.post(
            "/api/v1/subjects",
            json={
                "name": SUBJECT_NAME,
                "region_id": region,
                "case_ref": CASE_REF,
                "groups": [GROUP],
            },
        )
        assert subject.status_code == 201, subject.text
        subject_id = subject.json()["id"]
        assert wait_for(lambda: api.get(f"/api/v1/subjects/{subject_id}").status_code == 200, 5)
        assigned = api.post(
            f"/api/v1/subjects/{subject_id}/assignments",
            json={
                "device_id": device,
                "role": "offender",
                "from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            },
        )
        assert assigned.status_code == 201, assigned.text
        zone = api.post(
            "/api/v1/zones",
            json={
                "name": ZONE_NAME,
                "kind": "exclusion",
                "subject_id": subject_id,
                "geometry": {"type": "Point", "coordinates": [LON + 0.004, LAT]},
                "radius_m": 150,
                "buffer_m": 100,
            },
        )
        assert zone.status_code == 201, zone.text
        world = {
            "region": region,
            "device": device,
            "password": password,
            "subject_id": subject_id,
            "zone_id": zone.json()["id"],
            "supervisor": supervisor,
            "ingest": running_ingest,
        }
        tag = Tag(settings, world)
        tag.approach()
        world["alert_id"] = tag.into_the_zone()
        note = api.post(f"/api/v1/alerts/{world['alert_id']}/notes", json={"body": NOTE})
        assert note.status_code in (200, 201), note.text
        # the API stores and returns what it was given: the console is where it must stay text
        stored = api.get(f"/api/v1/subjects/{subject_id}").json()
        assert (stored["name"], stored["case_ref"], stored["groups"]) == (
            SUBJECT_NAME,
            CASE_REF,
            [GROUP],
        )
        assert api.get(f"/api/v1/zones/{world['zone_id']}").json()["name"] == ZONE_NAME
    return world


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_names_notes_and_regions_show_as_text_and_run_nothing(
    settings,
    console_server,  # noqa: F811
    planted,
):
    region_option = f"{REGION_NAME} ({planted['region']})"
    expect = {
        "queue": [SUBJECT_NAME],
        "alert": [SUBJECT_NAME, NOTE],
        "subjects": [SUBJECT_NAME, CASE_REF],
        "subject": [SUBJECT_NAME, CASE_REF, GROUP, ZONE_NAME],
        "zones": [ZONE_NAME, f"Edit zone {ZONE_NAME}", f"{SUBJECT_NAME} ({planted['region']})"],
        "reports": [region_option],
    }
    started = time.monotonic()
    result = run_driver(
        DRIVER,
        {
            "url": console_server.url,
            "chromium": chromium_path(),
            "node_modules": str(NODE_MODULES),
            "artifacts": str(ARTIFACTS),
            "user": planted["supervisor"],
            "subject_id": planted["subject_id"],
            "zone_id": planted["zone_id"],
            "alert_id": planted["alert_id"],
            "expect": expect,
            "modes": ["csp", "no-csp"],
        },
    )
    elapsed = time.monotonic() - started
    tooltips_expected = {
        "queue_zone": ZONE_NAME,
        "alert_zone": ZONE_NAME,
        "position": SUBJECT_NAME,
        "track": SUBJECT_NAME,
    }
    for mode, seen in result["modes"].items():
        ran = {
            "pwned flag": seen["pwned"],
            "requests to /pwned": len(seen["pwned_requests"]),
            "dialogs": len(seen["dialogs"]),
            "policy violations": sum(len(v["violations"]) for v in seen["views"].values()),
            "injected elements": max(v["injected"] for v in seen["views"].values()),
            "payloads not shown as text": sum(len(v["missing"]) for v in seen["views"].values()),
        }
        print(
            f"{mode}: {len(seen['views'])} views and {len(seen['tooltips'])} tooltips with"
            f" {sum(map(len, expect.values()))} planted strings: {ran}"
        )
        assert ran == {
            "pwned flag": None,
            "requests to /pwned": 0,
            "dialogs": 0,
            "policy violations": 0,
            "injected elements": 0,
            "payloads not shown as text": 0,
        }, seen
        for view, found in seen["views"].items():
            assert found["pwned"] is None, (mode, view)
            assert found["scripts"] == 1, (mode, view)  # the console's own module script only
            assert found["missing"] == [], (mode, view, found["missing"])
        # the tooltips: the payload as text, and no element but the console's own
        for name, text in tooltips_expected.items():
            tip = seen["tooltips"][name]
            assert text in tip["text"], (mode, name, tip)
            assert set(tip["elements"]) <= {"div", "strong"}, (mode, name, tip)
        assert region_option in seen["region_options"]
        assert seen["page_errors"] == [], seen["page_errors"]
        assert seen["console_errors"] == [], seen["console_errors"]
    print(f"screenshots ({elapsed:.0f} s): {', '.join(result['screenshots'])}")
    for screenshot in result["screenshots"]:
        assert Path(screenshot).stat().st_size > 10_000, screenshot
