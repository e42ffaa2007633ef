"""The console's "Regions & offices" page in a real browser (Debian's headless Chromium, driven
by playwright-core from node_modules) against a real API server and database.

A regional admin centres the map on the region, draws a self-intersecting boundary (refused,
the geofence core's reason shown under the form), then a square; places an office with a click
inside it, gives it a 5 km service radius, attaches a tracing unit; places a second office
serving a drawn polygon (a bow-tie refused with the reason first); reloads and sees the
boundary, the offices, their service areas and the unit. A supervisor gets no such tab (the
API's geography routes are admin-only) and the page says so. What the browser saved is read back
from the database. Screenshots go to /tmp/tagwatch-console (or TAGWATCH_TEST_ARTIFACTS) as
places-*.png.

Skipped, with the reason, when Chromium, node or node_modules are missing: scripts/setup.sh
installs them.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import psycopg
import pytest

from tagwatch.api.security import hash_password
from tests.console.conftest import ARTIFACTS, NODE_MODULES, browser_missing, chromium_path
from tests.console.harness import run_driver
from tests.support import fresh_id

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]
DRIVER = Path(__file__).with_name("drive_places.mjs")
PASSWORD = "places-pass-word-1"
CENTRE = (24.76, -28.74)  # Kimberley: lon, lat


def _user(conn: psycopg.Connection, role: str, regions: list[str]) -> dict[str, str]:
    username = fresh_id(f"places-{role}")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
        (username, hash_password(PASSWORD), role, regions),
    )
    return {"username": username, "password": PASSWORD}


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_an_admin_draws_a_region_and_an_office_with_a_radius(settings, console_server):
    region = fresh_id("plc")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        root = _user(conn, "admin", ["*"])
    with httpx.Client(base_url=console_server.url, timeout=10) as client:
        token = client.post("/api/v1/auth/token", data=root).json()["access_token"]
        created = client.post(
            "/api/v1/regions",
            json={"id": region, "name": "Northern Cape"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        admin = _user(conn, "admin", [region])  # a regional admin: only this region shows
        supervisor = _user(conn, "supervisor", [region])

    result = run_driver(
        DRIVER,
        {
            "url": console_server.url,
            "chromium": chromium_path(),
            "node_modules": str(NODE_MODULES),
            "artifacts": str(ARTIFACTS),
            "admin": admin,
            "supervisor": supervisor,
            "region": region,
            "centre": CENTRE,
        },
    )
    print(f"browser steps: {result['steps']}")
    assert result["page_errors"] == [], result["page_errors"]
    assert result["console_errors"] == [], result["console_errors"]
    assert result["places_tab_visible"] is True

    # the bow-tie is refused with the geofence core's reason, shown under the form
    assert result["bowtie_corners"] == 4
    assert result["bowtie_refusal"].startswith("422: invalid geometry")
    assert any("invalid polygon" in r for r in result["bowtie_reasons"]), result
    assert "4 corners" in result["region_hint"]
    assert "is saved" in result["region_saved"]

    # the square is the region's boundary, around the centre, as GeoJSON [lon, lat]
    with psycopg.connect(settings.database_url) as conn:
        (boundary,) = conn.execute(
            "SELECT boundary FROM regions WHERE id = %s", (region,)
        ).fetchone()
        offices = conn.execute(
            "SELECT id, name, lon, lat, service_radius_m, service_area FROM offices"
            " WHERE region_id = %s",
            (region,),
        ).fetchall()
        units = conn.execute(
            "SELECT name, office_id FROM tracing_units WHERE region_id = %s", (region,)
        ).fetchall()
    assert boundary["type"] == "Polygon"
    ring = boundary["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    assert min(lons) < CENTRE[0] < max(lons)
    assert min(lats) < CENTRE[1] < max(lats)
    assert max(lons) - min(lons) < 1 and max(lats) - min(lats) < 1  # zoom 10: some 30 km

    # the office: where it was clicked (inside the square, proposed in the region), 5 km
    [(office_id, name, lon, lat, radius_m, area), satellite] = sorted(offices)
    assert (name, radius_m, area) == ("Kimberley community corrections", 5000, None)
    assert min(lons) < lon < max(lons) and min(lats) < lat < max(lats)
    assert math.dist((lon, lat), CENTRE) < 0.05
    assert result["office_region_proposed"] == region
    assert "is saved" in result["office_saved"]
    assert result["office_hash"] == f"#/places/office/{office_id}"
    assert units == [("Tracing team North", office_id)]
    assert result["units_listed"] == ["Tracing team North"]

    # the second office serves the square drawn around it, as GeoJSON [lon, lat]; the bow-tie
    # before it was refused with the core's reason for the service area
    assert result["radius_hidden_in_polygon_mode"] is True
    assert result["office_refusal"].startswith("422: invalid geometry")
    assert "service_area: invalid polygon" in result["office_refusal"]
    _, satellite_name, s_lon, s_lat, s_radius, s_area = satellite
    assert (satellite_name, s_radius) == ("Satellite office", None)
    assert result["polygon_office_hash"] == f"#/places/office/{satellite[0]}"
    assert s_area["type"] == "Polygon" and len(s_area["coordinates"][0]) == 5
    s_lons = [p[0] for p in s_area["coordinates"][0]]
    s_lats = [p[1] for p in s_area["coordinates"][0]]
    assert min(s_lons) < s_lon < max(s_lons) and min(s_lats) < s_lat < max(s_lats)
    assert s_lon < lon and s_lat > lat  # clicked left of and above the first

    # after a reload: the office's form as saved; the map draws the boundary, the office and its
    # service circle (no draft left), the list names the unit
    reloaded = result["reloaded_office"]
    assert reloaded["name"] == "Kimberley community corrections"
    assert (reloaded["radius"], reloaded["radius_mode"]) == ("5000", True)
    assert (reloaded["lon"], reloaded["lat"]) == (lon, lat)
    assert result["map"] == {"regions": 1, "offices": 2, "service_areas": 2, "drafts": 0}
    assert "Tracing units: Tracing team North" in result["list_text"]
    assert "5,000 m" in result["list_text"]
    assert "Satellite office" in result["list_text"]
    assert "Kimberley community corrections" in result["office_tooltip"]
    assert "Tracing team North" in result["office_tooltip"]
    # a supervisor has no Regions & offices tab, and the page says why
    assert result["supervisor_tab_hidden"] is True
    assert "admins" in result["supervisor_message"]
    for screenshot in result["screenshots"]:
        assert Path(screenshot).stat().st_size > 10_000, screenshot
