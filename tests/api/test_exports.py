"""A subject's export for another agency: valid GeoJSON (lon, lat), the same rows as CSV (a zip
of three, or one kind), only the range and only what the subject held, audited, region-scoped."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

RANGE = {"from": "2025-06-01T00:00:00Z", "to": "2025-06-02T00:00:00Z"}


@pytest.fixture(scope="module")
def as_(login):
    """Log in once per (role, regions) in this module: each login hashes a password."""
    cache: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    def headers(role: str, regions: list[str]) -> dict[str, str]:
        key = (role, tuple(regions))
        if key not in cache:
            cache[key] = login(role, regions)
        return cache[key]

    return headers


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def subject(settings) -> dict[str, Any]:
    """A tag held from 06:00 (fixes before that are someone else's), three fixes in range, one
    after it, an event, an alert with a position, and an alert outside the range."""
    region = fresh_id("er")
    device = fresh_id("ed")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        row = conn.execute(
            "INSERT INTO subjects (name, region_id, case_ref) VALUES ('E', %s, %s) RETURNING id",
            (region, fresh_id("case")),
        ).fetchone()
        assert row is not None
        subject_id = row[0]
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, subject_id, at("2025-06-01T06:00:00Z")),
        )
        for ts, lat, lon, seq in (
            ("2025-06-01T05:00:00Z", 10.0, 20.0, 1),  # before the holding: not the subject's
            ("2025-06-01T07:00:00Z", 52.51, 13.39, 2),
            ("2025-06-01T07:01:00Z", 52.52, 13.40, 3),
            ("2025-06-01T07:02:00Z", 52.53, 13.41, -1),
            ("2025-06-02T00:00:00Z", 52.54, 13.42, 5),  # the range's end is exclusive
        ):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, seq, lat, lon, acc)"
                " VALUES (%s, %s, %s, %s, %s, 7)",
                (device, at(ts), seq, lat, lon),
            )
        conn.execute(
            "INSERT INTO device_events (device_id, ts, type, batt, detail)"
            " VALUES (%s, %s, 'battery_low', 14, '{\"note\": \"x\"}')",
            (device, at("2025-06-01T08:00:00Z")),
        )
        for opened in ("2025-06-01T09:00:00Z", "2025-05-01T09:00:00Z"):
            conn.execute(
                "INSERT INTO alerts (subject_id, device_id, type, severity, opened_at, lat, lon,"
                " details) VALUES (%s, %s, 'exclusion_zone_entry', 'critical', %s, 52.5, 13.4,"
                " '{\"zone\": 1}')",
                (subject_id, device, at(opened)),
            )
    return {"id": subject_id, "region": region, "device": device}


def url(subject: dict[str, Any]) -> str:
    return f"/api/v1/subjects/{subject['id']}/export"


def test_geojson_is_a_valid_feature_collection_and_audited(api, as_, subject, settings):
    reason = fresh_id("transfer")
    response = api.get(
        url(subject),
        params={**RANGE, "reason": reason},
        headers=as_("supervisor", [subject["region"]]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="subject-{subject["id"]}-2025-06-01-2025-06-02.geojson"'
    )
    document = response.json()
    assert document["type"] == "FeatureCollection"
    kinds = [f["properties"]["kind"] for f in document["features"]]
    assert kinds == ["fix", "fix", "fix", "event", "alert"]
    fixes = [f for f in document["features"] if f["properties"]["kind"] == "fix"]
    assert [f["geometry"]["coordinates"] for f in fixes] == [
        [13.39, 52.51],
        [13.40, 52.52],
        [13.41, 52.53],
    ]
    for feature in document["features"]:
        assert feature["type"] == "Feature"
        geometry = feature["geometry"]
        assert geometry is None or (
            geometry["type"] == "Point"
            and -180 <= geometry["coordinates"][0] <= 180
            and -90 <= geometry["coordinates"][1] <= 90
        )
    assert [f["properties"]["seq"] for f in fixes] == [2, 3, None]
    event = document["features"][3]
    assert event["geometry"] is None
    assert event["properties"]["type"] == "battery_low"
    assert event["properties"]["detail"] == {"note": "x"}
    alert = document["features"][4]
    assert alert["geometry"]["coordinates"] == [13.4, 52.5]
    assert at(alert["properties"]["opened_at"]) == at("2025-06-01T09:00:00Z")

    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT role, action, subject_id, detail FROM audit_log WHERE detail->>'reason' = %s",
            (reason,),
        ).fetchall()
    assert len(rows) == 1
    role, action, subject_id, detail = rows[0]
    assert (role, action, subject_id) == ("supervisor", "export", subject["id"])
    assert detail["format"] == "geojson"
    assert detail["start"] == "2025-06-01T00:00:00+00:00"


def test_csv_zip_holds_three_csvs_matching_the_geojson(api, as_, subject):
    headers = as_("admin", ["*"])
    geojson = api.get(url(subject), params=RANGE, headers=headers).json()
    response = api.get(url(subject), params={**RANGE, "format": "csv"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].endswith('.zip"')
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    assert archive.namelist() == ["fixes.csv", "events.csv", "alerts.csv"]
    tables = {
        name.removesuffix(".csv"): list(csv.DictReader(io.StringIO(archive.read(name).decode())))
        for name in archive.namelist()
    }
    assert [len(tables[k]) for k in ("fixes", "events", "alerts")] == [3, 1, 1]
    features = {
        kind: [f["properties"] for f in geojson["features"] if f["properties"]["kind"] == kind]
        for kind in ("fix", "event", "alert")
    }
    for row, props in zip(tables["fixes"], features["fix"], strict=True):
        assert at(row["ts"]) == at(props["ts"])
        assert (float(row["lat"]), float(row["lon"])) == (props["lat"], props["lon"])
        assert row["device_id"] == subject["device"] and row["role"] == "offender"
    assert tables["fixes"][2]["seq"] == ""
    assert json.loads(tables["events"][0]["detail"]) == {"note": "x"}
    assert json.loads(tables["alerts"][0]["details"]) == {"zone": 1}
    assert int(tables["alerts"][0]["id"]) == features["alert"][0]["id"]


def test_one_kind_as_a_single_csv(api, as_, subject):
    response = api.get(
        url(subject),
        params={**RANGE, "format": "csv", "kind": "events"},
        headers=as_("admin", ["*"]),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].endswith('-events.csv"')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["type"] for r in rows] == ["battery_low"]
    only_alerts = api.get(
        url(subject), params={**RANGE, "kind": "alerts"}, headers=as_("admin", ["*"])
    ).json()
    assert [f["properties"]["kind"] for f in only_alerts["features"]] == ["alert"]


def test_export_is_region_scoped_for_supervisors_and_checks_input(api, as_, subject):
    elsewhere = as_("supervisor", [fresh_id("nowhere")])
    assert api.get(url(subject), params=RANGE, headers=elsewhere).status_code == 404
    for role in ("operator", "tracer"):
        refused = api.get(url(subject), params=RANGE, headers=as_(role, [subject["region"]]))
        assert refused.status_code == 403
    assert api.get(url(subject), params=RANGE).status_code == 401
    mine = as_("supervisor", [subject["region"]])
    backwards = api.get(
        url(subject), params={"from": RANGE["to"], "to": RANGE["from"]}, headers=mine
    )
    assert backwards.status_code == 422
    assert backwards.json()["detail"]["reason"] == "empty_window"
    too_long = api.get(
        url(subject), params={"from": "2024-01-01T00:00:00Z", "to": RANGE["to"]}, headers=mine
    )
    assert too_long.json()["detail"]["reason"] == "window_too_long"
    for bad in ({"format": "kml"}, {"kind": "zones"}, {"from": "2025-06-01T00:00:00"}):
        assert api.get(url(subject), params={**RANGE, **bad}, headers=mine).status_code == 422
