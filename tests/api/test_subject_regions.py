"""A subject moves between regions: who moved them and when is kept, the move needs both regions
to be the mover's, and the reports attribute days by that history."""

from __future__ import annotations

import psycopg

from tests.support import fresh_id


def region(settings, name: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (name, name))
    return name


def test_moving_a_subject_keeps_its_region_history(settings, api, login):
    west, east, other = (region(settings, fresh_id(n)) for n in ("west", "east", "other"))
    boss = login("supervisor", [west, east])
    created = api.post(
        "/api/v1/subjects",
        json={"name": "Sam", "region_id": west, "timezone": "Africa/Johannesburg"},
        headers=boss,
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]

    moved = api.patch(f"/api/v1/subjects/{sid}", json={"region_id": east}, headers=boss)
    assert moved.status_code == 200, moved.text
    assert moved.json()["region_id"] == east
    history = api.get(f"/api/v1/subjects/{sid}/regions", headers=boss).json()
    assert [h["region_id"] for h in history] == [west, east]
    assert history[0]["to"] == history[1]["from"] and history[1]["to"] is None
    assert history[1]["changed_by"] is not None

    # both regions must be the mover's; the east-only operator cannot move or even see it back
    assert (
        api.patch(f"/api/v1/subjects/{sid}", json={"region_id": other}, headers=boss).status_code
        == 403
    )
    west_only = login("supervisor", [west])
    assert api.get(f"/api/v1/subjects/{sid}/regions", headers=west_only).status_code == 404
    operator = login("operator", [east])
    assert (
        api.patch(f"/api/v1/subjects/{sid}", json={"name": "x"}, headers=operator).status_code
        == 403
    )
    # bad input is a 422 with a reason, an unknown field too
    bad = api.patch(f"/api/v1/subjects/{sid}", json={"timezone": "Mars/Olympus"}, headers=boss)
    assert bad.status_code == 422 and "Mars/Olympus" in bad.text
    assert (
        api.patch(f"/api/v1/subjects/{sid}", json={"colour": "red"}, headers=boss).status_code
        == 422
    )
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT region_id FROM report_subject_regions WHERE subject_id = %s"
            " ORDER BY lower(during) NULLS FIRST",
            (sid,),
        ).fetchall()
    assert [r[0] for r in rows] == [west, east]
