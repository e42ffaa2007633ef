"""Regions' boundaries, offices and tracing units through the API on the real app and database:
create / read / update / delete, the geofence core's reasons as 422, region scoping of
regional admins (another region's answers as a missing one's), webhooks targeting a unit, and
what the platform says about a position."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

V1 = "/api/v1"


def square(lon: float, lat: float, half: float) -> dict:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


BOW_TIE = {
    "type": "Polygon",
    "coordinates": [[[18, -34], [19, -33], [19, -34], [18, -33], [18, -34]]],
}
UNCLOSED = {"type": "Polygon", "coordinates": [[[18, -34], [19, -34], [19, -33], [18, -33]]]}
POINT = {"type": "Point", "coordinates": [18.5, -33.5]}


@pytest.fixture(scope="module")
def world(api, login):
    admin = login("admin", ["*"])
    north, south = fresh_id("gnorth"), fresh_id("gsouth")
    for region in (north, south):
        response = api.post(V1 + "/regions", json={"id": region, "name": region}, headers=admin)
        assert response.status_code == 201
    return {
        "north": north,
        "south": south,
        "admin": admin,
        "north_admin": login("admin", [north]),
        "supervisor": login("supervisor", [north]),
        "tracer": login("tracer", [north]),
    }


def audit_actions(settings, **detail) -> list[str]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT action FROM audit_log WHERE detail @> %s ORDER BY id", (json.dumps(detail),)
        ).fetchall()
    return [r[0] for r in rows]


def test_a_region_boundary_is_drawn_read_refused_and_removed(api, world, settings):
    admin, north = world["admin"], world["north"]
    path = f"{V1}/regions/{north}"
    assert api.get(path, headers=admin).json()["boundary"] is None
    drawn = api.put(path + "/boundary", json={"boundary": square(24, -29, 2)}, headers=admin)
    assert drawn.status_code == 200, drawn.text
    assert api.get(path, headers=admin).json()["boundary"] == square(24, -29, 2)
    for bad, words in [
        (BOW_TIE, "invalid polygon"),
        (UNCLOSED, "not closed"),
        (POINT, "not Polygon or MultiPolygon"),
        ({"type": "Polygon", "coordinates": "nope"}, "coordinates"),
    ]:
        refused = api.put(path + "/boundary", json={"boundary": bad}, headers=admin)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert detail["reason"] == "invalid_geometry"
        assert any(words in r for r in detail["reasons"]), detail
    assert api.get(path, headers=admin).json()["boundary"] == square(24, -29, 2)  # unchanged
    assert api.delete(path + "/boundary", headers=admin).status_code == 204
    assert api.get(path, headers=admin).json()["boundary"] is None
    assert audit_actions(settings, region_id=north) == [
        "region_boundary_set",
        "region_boundary_clear",
    ]
    missing = api.get(f"{V1}/regions/no-such-region", headers=admin)
    assert missing.status_code == 404


def test_offices_and_tracing_units_crud(api, world, settings):
    admin, north, south = world["admin"], world["north"], world["south"]
    body = {"name": "Kimberley", "region_id": north, "lon": 24.76, "lat": -28.74}
    # a service area is one of a polygon or a radius, and a polygon the core accepts
    for extra, status in [
        ({}, 422),
        ({"service_radius_m": 30_000, "service_area": square(24.76, -28.74, 0.3)}, 422),
        ({"service_area": BOW_TIE}, 422),
        ({"service_radius_m": -1}, 422),
    ]:
        refused = api.post(V1 + "/offices", json={**body, **extra}, headers=admin)
        assert refused.status_code == status, (extra, refused.text)
    refused = api.post(V1 + "/offices", json={**body, "service_area": BOW_TIE}, headers=admin)
    assert any("invalid polygon" in r for r in refused.json()["detail"]["reasons"])
    unknown = api.post(
        V1 + "/offices", json={**body, "region_id": "no-such", "service_radius_m": 1}, headers=admin
    )
    assert unknown.status_code == 422

    created = api.post(V1 + "/offices", json={**body, "service_radius_m": 30_000}, headers=admin)
    assert created.status_code == 201, created.text
    office = created.json()
    assert office["service_radius_m"] == 30_000 and office["service_area"] is None
    path = f"{V1}/offices/{office['id']}"
    assert api.get(path, headers=admin).json() == office
    # giving a polygon replaces the radius
    area = square(24.76, -28.74, 0.4)
    changed = api.patch(path, json={"service_area": area, "name": "Kimberley CC"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["service_area"] == area and changed.json()["service_radius_m"] is None
    assert changed.json()["name"] == "Kimberley CC"
    assert api.patch(path, json={"service_area": UNCLOSED}, headers=admin).status_code == 422
    listed = api.get(V1 + "/offices", params={"region": north}, headers=admin).json()
    assert [o["id"] for o in listed] == [office["id"]]

    unit = api.post(
        V1 + "/tracing-units", json={"name": "Tracing team 1", "office_id": office["id"]},
        headers=admin,
    )  # fmt: skip
    assert unit.status_code == 201, unit.text
    assert unit.json()["region_id"] == north
    unit_path = f"{V1}/tracing-units/{unit.json()['id']}"
    assert api.get(unit_path, headers=admin).json() == unit.json()
    # an office with a unit keeps its region and is not deleted
    moved = api.patch(path, json={"region_id": south}, headers=admin)
    assert moved.status_code == 409 and moved.json()["detail"]["reason"] == "units_attached"
    assert api.delete(path, headers=admin).status_code == 409
    # a unit moved to another office takes that office's region
    other = api.post(
        V1 + "/offices",
        json={"name": "Upington", "region_id": south, "lon": 21.25, "lat": -28.45,
              "service_radius_m": 20_000},
        headers=admin,
    ).json()  # fmt: skip
    moved_unit = api.patch(unit_path, json={"office_id": other["id"]}, headers=admin)
    assert moved_unit.status_code == 200 and moved_unit.json()["region_id"] == south
    listed = api.get(V1 + "/tracing-units", params={"office_id": other["id"]}, headers=admin)
    assert [u["id"] for u in listed.json()] == [unit.json()["id"]]
    assert api.delete(path, headers=admin).status_code == 204
    assert api.get(path, headers=admin).status_code == 404
    assert api.delete(unit_path, headers=admin).status_code == 204
    assert api.get(unit_path, headers=admin).status_code == 404
    actions = audit_actions(settings, office_id=office["id"])
    assert actions[:2] == ["office_create", "office_update"] and actions[-1] == "office_delete"
    assert audit_actions(settings, unit_id=unit.json()["id"]) == [
        "tracing_unit_create",
        "tracing_unit_update",
        "tracing_unit_delete",
    ]


def test_a_regional_admin_sees_and_manages_only_their_regions(api, world):
    admin, mine, north, south = world["admin"], world["north_admin"], world["north"], world["south"]
    theirs = api.post(
        V1 + "/offices",
        json={"name": "South office", "region_id": south, "lon": 20, "lat": -30,
              "service_radius_m": 1000},
        headers=admin,
    ).json()  # fmt: skip
    unit = api.post(
        V1 + "/tracing-units", json={"name": "South team", "office_id": theirs["id"]},
        headers=admin,
    ).json()  # fmt: skip
    missing = 987_654_321
    for method, path, body in [
        ("GET", "/offices/{}", None),
        ("PATCH", "/offices/{}", {"name": "x"}),
        ("DELETE", "/offices/{}", None),
    ]:
        b = api.request(method, V1 + path.format(theirs["id"]), json=body, headers=mine)
        m = api.request(method, V1 + path.format(missing), json=body, headers=mine)
        assert b.status_code == m.status_code == 404
        assert b.text.replace(str(theirs["id"]), "?") == m.text.replace(str(missing), "?")
    for method, path, body in [("GET", "/tracing-units/{}", None),
                               ("DELETE", "/tracing-units/{}", None)]:  # fmt: skip
        b = api.request(method, V1 + path.format(unit["id"]), json=body, headers=mine)
        m = api.request(method, V1 + path.format(missing), json=body, headers=mine)
        assert b.status_code == m.status_code == 404
    b = api.post(V1 + "/tracing-units", json={"name": "x", "office_id": theirs["id"]}, headers=mine)
    m = api.post(V1 + "/tracing-units", json={"name": "x", "office_id": missing}, headers=mine)
    assert b.status_code == m.status_code == 422
    assert b.json()["detail"]["reason"] == m.json()["detail"]["reason"] == "unknown_office"
    assert api.get(f"{V1}/regions/{south}", headers=mine).status_code == 404
    put = api.put(f"{V1}/regions/{south}/boundary", json={"boundary": square(20, -30, 1)},
                  headers=mine)  # fmt: skip
    assert put.status_code == 404
    foreign = api.post(
        V1 + "/offices",
        json={"name": "x", "region_id": south, "lon": 20, "lat": -30, "service_radius_m": 1},
        headers=mine,
    )
    assert foreign.status_code == 403
    assert theirs["id"] not in {o["id"] for o in api.get(V1 + "/offices", headers=mine).json()}
    assert unit["id"] not in {u["id"] for u in api.get(V1 + "/tracing-units", headers=mine).json()}
    assert api.get(f"{V1}/regions/{north}", headers=mine).status_code == 200
    for role in ("supervisor", "tracer"):
        assert api.get(V1 + "/offices", headers=world[role]).status_code == 403


def test_webhooks_target_a_tracing_unit(api, world):
    admin, mine, north, south = world["admin"], world["north_admin"], world["north"], world["south"]
    office = api.post(
        V1 + "/offices",
        json={"name": "North office", "region_id": north, "lon": 24, "lat": -29,
              "service_radius_m": 5000},
        headers=admin,
    ).json()  # fmt: skip
    unit = api.post(
        V1 + "/tracing-units", json={"name": "North team", "office_id": office["id"]},
        headers=admin,
    ).json()  # fmt: skip
    body = {"name": fresh_id("unit-hook"), "url": "https://tracing.example.org/hook",
            "tracing_unit_id": unit["id"], "min_severity": "critical"}  # fmt: skip
    hook = api.post(V1 + "/webhooks", json=body, headers=mine)
    assert hook.status_code == 201, hook.text
    assert hook.json()["tracing_unit_id"] == unit["id"] and hook.json()["regions"] == [north]
    # a unit may not be deleted while an active subscription targets it
    deleted = api.delete(f"{V1}/tracing-units/{unit['id']}", headers=admin)
    assert deleted.status_code == 409
    assert deleted.json()["detail"]["reason"] == "subscriptions_attached"
    cleared = api.patch(f"{V1}/webhooks/{hook.json()['id']}", json={"tracing_unit_id": None},
                        headers=mine)  # fmt: skip
    assert cleared.status_code == 200 and cleared.json()["tracing_unit_id"] is None
    again = api.patch(f"{V1}/webhooks/{hook.json()['id']}",
                      json={"tracing_unit_id": unit["id"]}, headers=mine)  # fmt: skip
    assert again.json()["tracing_unit_id"] == unit["id"]
    # another region's unit answers like a missing one
    south_office = api.post(
        V1 + "/offices",
        json={"name": "S", "region_id": south, "lon": 20, "lat": -30, "service_radius_m": 5000},
        headers=admin,
    ).json()
    south_unit = api.post(
        V1 + "/tracing-units", json={"name": "S team", "office_id": south_office["id"]},
        headers=admin,
    ).json()  # fmt: skip
    b = api.post(V1 + "/webhooks", json={**body, "tracing_unit_id": south_unit["id"]}, headers=mine)
    m = api.post(V1 + "/webhooks", json={**body, "tracing_unit_id": 987_654_321}, headers=mine)
    assert b.status_code == m.status_code == 422
    assert b.json()["detail"]["reason"] == m.json()["detail"]["reason"] == "unknown_tracing_unit"
    off = api.patch(f"{V1}/webhooks/{hook.json()['id']}", json={"active": False}, headers=mine)
    assert off.status_code == 200  # later tests' critical alerts owe this receiver nothing


def test_what_the_platform_says_about_a_position(api, world):
    admin, north, south = world["admin"], world["north"], world["south"]
    api.put(f"{V1}/regions/{north}/boundary", json={"boundary": square(30, 10, 1)}, headers=admin)
    api.put(f"{V1}/regions/{south}/boundary", json={"boundary": square(30, 8, 1)}, headers=admin)
    near = api.post(
        V1 + "/offices",
        json={"name": "Border office", "region_id": south, "lon": 30.0, "lat": 8.5,
              "service_area": square(30.0, 8.8, 0.4)},
        headers=admin,
    ).json()  # fmt: skip
    answer = api.get(
        V1 + "/places/locate",
        params={"lon": 30.0, "lat": 9.1, "home_region": north},
        headers=admin,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["regions"] == [north]
    assert [o["office_id"] for o in body["serving"]] == [near["id"]]
    assert 66_000 < body["serving"][0]["distance_m"] < 67_000  # 0.6 deg of latitude
    assert body["routing"]["office"] == "Border office"
    assert body["routing"]["outside_home_region"] is False
    assert body["routing"]["reason"] == (
        "position 66 km from Border office, inside its service area, inside the home region"
    )
    bad = api.get(V1 + "/places/locate", params={"lon": 200, "lat": 0}, headers=admin)
    assert bad.status_code == 422
