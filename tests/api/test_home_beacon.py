"""An approved home beacon (issue 14): set and cleared by supervisors and admins of the subject's
region through PATCH /subjects/{id}, recorded with who and when, audited, shown in the read, and
carried to the alert engine through the subject's revision; `tagwatch subject beacon` does the
same from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from tagwatch.store.engine_repository import PgEngineRepository
from tagwatch.store.subjects import add_subject
from tests.support import fresh_id


def region(settings, name: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (name, name))
    return name


def engine_view(settings, sid: int, revision: int) -> tuple[int, str | None] | None:
    """(revision, home_beacon) of the subject as the engine's sync reads it after ``revision``."""
    with psycopg.connect(settings.database_url) as conn:
        rows = [r for r in PgEngineRepository(conn).subjects_since(revision) if r.subject_id == sid]
    return (rows[0].revision, rows[0].home_beacon) if rows else None


def test_a_supervisor_approves_and_clears_a_home_beacon(settings, api, login):
    home = region(settings, fresh_id("hb"))
    boss = login("supervisor", [home])
    created = api.post("/api/v1/subjects", json={"name": "Sam", "region_id": home}, headers=boss)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert created.json()["home_beacon"] is None
    seen = engine_view(settings, sid, 0)
    assert seen is not None and seen[1] is None

    approved = api.patch(f"/api/v1/subjects/{sid}", json={"home_beacon": "HB-0042"}, headers=boss)
    assert approved.status_code == 200, approved.text
    beacon = approved.json()["home_beacon"]
    assert beacon["id"] == "HB-0042" and beacon["approved_by"] and beacon["approved_at"]
    assert api.get(f"/api/v1/subjects/{sid}", headers=boss).json()["home_beacon"] == beacon
    # the engine's sync sees the change (the subject's revision moved)
    after = engine_view(settings, sid, seen[0])
    assert after is not None and after[1] == "HB-0042"

    # another field alone leaves the approval as it was; the same id again keeps its approval
    renamed = api.patch(f"/api/v1/subjects/{sid}", json={"name": "Sam B"}, headers=boss)
    assert renamed.json()["home_beacon"] == beacon
    again = api.patch(f"/api/v1/subjects/{sid}", json={"home_beacon": "HB-0042"}, headers=boss)
    assert again.json()["home_beacon"] == beacon

    cleared = api.patch(f"/api/v1/subjects/{sid}", json={"home_beacon": None}, headers=boss)
    assert cleared.status_code == 200 and cleared.json()["home_beacon"] is None
    gone = engine_view(settings, sid, after[0])
    assert gone is not None and gone[1] is None

    with psycopg.connect(settings.database_url) as conn:
        audited = conn.execute(
            "SELECT action, detail->>'beacon', detail->>'previous' FROM audit_log"
            " WHERE subject_id = %s AND action LIKE 'home_beacon%%' ORDER BY id",
            (sid,),
        ).fetchall()
    assert audited == [
        ("home_beacon_approve", "HB-0042", None),
        ("home_beacon_clear", None, "HB-0042"),
    ]


def test_only_supervisors_and_admins_of_the_region_approve_a_beacon(settings, api, login):
    home, other = (region(settings, fresh_id(n)) for n in ("hb", "hb-other"))
    boss = login("supervisor", [home])
    sid = api.post(
        "/api/v1/subjects", json={"name": "Alex", "region_id": home}, headers=boss
    ).json()["id"]
    url = f"/api/v1/subjects/{sid}"
    for role in ("operator", "tracer"):
        refused = api.patch(url, json={"home_beacon": "HB-1"}, headers=login(role, [home]))
        assert refused.status_code == 403, role
    elsewhere = api.patch(url, json={"home_beacon": "HB-1"}, headers=login("supervisor", [other]))
    assert elsewhere.status_code == 404
    admin = api.patch(url, json={"home_beacon": "HB-1"}, headers=login("admin", ["*"]))
    assert admin.status_code == 200 and admin.json()["home_beacon"]["id"] == "HB-1"
    # an id the beacon pattern refuses is a 422 with a reason, never stored
    for bad in ("", "x" * 65, "HB 1", "HB/1", 42):
        response = api.patch(url, json={"home_beacon": bad}, headers=boss)
        assert response.status_code == 422, bad
    assert api.get(url, headers=boss).json()["home_beacon"]["id"] == "HB-1"


def test_the_cli_sets_shows_and_clears_the_approval(settings, service_env):
    home = region(settings, fresh_id("hb-cli"))
    with psycopg.connect(settings.database_url) as conn:
        sid = add_subject(conn, name="Cli", region_id=home)
    env = {**os.environ, **service_env, "TAGWATCH_ENVIRONMENT": "test"}

    def tagwatch(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tagwatch", "subject", "beacon", *args]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    done = tagwatch("set", str(sid), "HB-CLI-1")
    assert done.returncode == 0, done.stderr
    shown = json.loads(tagwatch("show", str(sid)).stdout)["home_beacon"]
    assert shown["id"] == "HB-CLI-1" and shown["approved_by"].startswith("cli:")
    refused = tagwatch("set", str(sid), "not a beacon")
    assert refused.returncode == 2 and "refused" in refused.stderr
    assert json.loads(tagwatch("clear", str(sid)).stdout)["home_beacon"] is None
    assert tagwatch("show", "999999999").returncode == 1
    with psycopg.connect(settings.database_url) as conn:
        audited = conn.execute(
            "SELECT action, username FROM audit_log WHERE subject_id = %s ORDER BY id", (sid,)
        ).fetchall()
    assert [a[0] for a in audited] == ["home_beacon_approve", "home_beacon_clear"]
    assert all(a[1].startswith("cli:") for a in audited)
