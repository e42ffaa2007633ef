"""Zones through the API on the real app and database: CRUD, the geofence core's reasons as 422,
roles, region isolation, and the revision the alert engine syncs by."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[18.40, -33.93], [18.41, -33.93], [18.41, -33.92], [18.40, -33.92], [18.40, -33.93]]
    ],
}
BOW_TIE = {
    "type": "Polygon",
    "coordinates": [
        [[18.40, -33.93], [18.41, -33.92], [18.41, -33.93], [18.40, -33.92], [18.40, -33.93]]
    ],
}
NIGHTS = {"weekly": [{"days": ["mon", "tue"], "start": "19:00", "end": "07:00"}]}


@pytest.fixture(scope="module")
def world(api, login):
    """Two regions, a subject in each, and users: supervisor, operator, tracer of the north."""
    admin = login("admin", ["*"])
    north, south = fresh_id("znorth"), fresh_id("zsouth")
    for region in (north, south):
        response = api.post("/api/v1/regions", json={"id": region, "name": region}, headers=admin)
        assert response.status_code == 201
    subjects = {}
    for region in (north, south):
        response = api.post(
            "/api/v1/subjects",
            json={"name": fresh_id("s"), "region_id": region, "timezone": "Africa/Johannesburg"},
            headers=admin,
        )
        assert response.status_code == 201
        subjects[region] = response.json()["id"]
    return {
        "north": north,
        "south": south,
        "n_subject": subjects[north],
        "s_subject": subjects[south],
        "admin": admin,
        "supervisor": login("supervisor", [north]),
        "operator": login("operator", [north]),
        "tracer": login("tracer", [north]),
    }


def revision(settings, zone_id: int) -> tuple[int, bool]:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT revision, deleted_at IS NOT NULL FROM zones WHERE id = %s", (zone_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_zone_crud_and_revision(api, world, settings):
    sup = world["supervisor"]
    body = {
        "name": "victim's street",
        "kind": "exclusion",
        "geometry": SQUARE,
        "buffer_m": 200,
        "subject_id": world["n_subject"],
        "schedule": NIGHTS,
        "thresholds": {"entry_fixes": 3},
    }
    created = api.post("/api/v1/zones", json=body, headers=sup)
    assert created.status_code == 201, created.text
    zone = created.json()
    assert zone["geometry"] == SQUARE
    assert zone["region_id"] == world["north"]  # its subject's region
    assert zone["schedule"] == NIGHTS
    zid = zone["id"]
    first_revision = zone["revision"]

    circle = api.post(
        "/api/v1/zones",
        json={
            "kind": "curfew",
            "geometry": {"type": "Point", "coordinates": [18.42, -33.92]},
            "radius_m": 60,
            "subject_id": world["n_subject"],
            "schedule": NIGHTS,
        },
        headers=sup,
    )
    assert circle.status_code == 201, circle.text

    # operators and tracers read, filtered by subject and kind, paged by id
    for reader in ("operator", "tracer"):
        listed = api.get(
            "/api/v1/zones",
            params={"subject_id": world["n_subject"], "kind": "exclusion"},
            headers=world[reader],
        )
        assert listed.status_code == 200
        assert [z["id"] for z in listed.json()] == [zid]
    page = api.get(
        "/api/v1/zones", params={"subject_id": world["n_subject"], "limit": 1}, headers=sup
    ).json()
    assert [z["id"] for z in page] == [zid]
    rest = api.get(
        "/api/v1/zones",
        params={"subject_id": world["n_subject"], "after_id": zid},
        headers=sup,
    ).json()
    assert [z["id"] for z in rest] == [circle.json()["id"]]

    patched = api.patch(f"/api/v1/zones/{zid}", json={"name": "renamed"}, headers=sup)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed"
    assert patched.json()["geometry"] == SQUARE  # untouched fields stay
    assert patched.json()["revision"] > first_revision  # the trigger bumped it
    cleared = api.patch(f"/api/v1/zones/{zid}", json={"schedule": None}, headers=sup).json()
    assert cleared["schedule"] is None

    replaced = api.put(
        f"/api/v1/zones/{zid}", json={**body, "kind": "inclusion", "buffer_m": None}, headers=sup
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["kind"] == "inclusion"
    assert replaced.json()["revision"] > cleared["revision"]

    before_delete, _ = revision(settings, zid)
    assert api.delete(f"/api/v1/zones/{zid}", headers=sup).status_code == 204
    after_delete, deleted = revision(settings, zid)
    assert deleted  # soft: the row stays for the alerts that refer to it
    assert after_delete > before_delete  # and the engine learns of the removal
    assert api.get(f"/api/v1/zones/{zid}", headers=sup).status_code == 404
    assert api.delete(f"/api/v1/zones/{zid}", headers=sup).status_code == 404
    listed = api.get("/api/v1/zones", params={"subject_id": world["n_subject"]}, headers=sup)
    assert zid not in [z["id"] for z in listed.json()]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"geometry": BOW_TIE}, "invalid polygon (Self-intersection"),
        (
            {
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[18.4, -33.9], [200.0, -33.9], [18.5, -33.8], [18.4, -33.9]]],
                }
            },
            "longitude 200 is outside -180..180",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [18.4, -33.9]}, "radius_m": -5},
            "radius_m must be positive",
        ),
        ({"schedule": {"weekly": [{"start": "25:00", "end": "07:00"}]}}, "schedule: "),
        (
            {"schedule": {"weekly": ["every night"]}},
            "schedule: schedule weekly must be a list of objects",
        ),
        ({"schedule": {"nightly": True}}, "unknown schedule fields"),
        ({"kind": "curfew"}, "a curfew zone needs a schedule"),
        ({"thresholds": {"entry_fixes": -1}}, "thresholds: "),
    ],
)
def test_invalid_zone_is_422_with_the_cores_reasons(api, world, change, expected):
    body = {"kind": "exclusion", "geometry": SQUARE, "subject_id": world["n_subject"], **change}
    response = api.post("/api/v1/zones", json=body, headers=world["supervisor"])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["reason"] == "invalid_zone"
    assert any(expected in reason for reason in detail["reasons"]), detail


def test_nan_is_422_not_500(api, world):
    """Python's JSON parser takes NaN; the zone must still be refused with a reason."""
    body = {
        "kind": "exclusion",
        "buffer_m": "NAN",
        "subject_id": world["n_subject"],
        "geometry": {"type": "Point", "coordinates": [18.4, -33.9]},
        "radius_m": 50,
    }
    raw = json.dumps(body).replace('"NAN"', "NaN")
    response = api.post(
        "/api/v1/zones",
        content=raw,
        headers={**world["supervisor"], "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "buffer_m must be a finite number of metres" in response.json()["detail"]["reasons"]


def test_invalid_patch_is_422_and_changes_nothing(api, world):
    sup = world["supervisor"]
    zone = api.post(
        "/api/v1/zones",
        json={"kind": "exclusion", "geometry": SQUARE, "subject_id": world["n_subject"]},
        headers=sup,
    ).json()
    bad = api.patch(f"/api/v1/zones/{zone['id']}", json={"geometry": BOW_TIE}, headers=sup)
    assert bad.status_code == 422
    assert api.get(f"/api/v1/zones/{zone['id']}", headers=sup).json()["geometry"] == SQUARE
    assert (
        api.patch(f"/api/v1/zones/{zone['id']}", json={"kind": None}, headers=sup).status_code
        == 422
    )


def test_operator_and_tracer_cannot_write_zones(api, world):
    body = {"kind": "exclusion", "geometry": SQUARE, "subject_id": world["n_subject"]}
    zone = api.post("/api/v1/zones", json=body, headers=world["supervisor"]).json()
    for role in ("operator", "tracer"):
        headers = world[role]
        assert api.post("/api/v1/zones", json=body, headers=headers).status_code == 403
        assert (
            api.patch(f"/api/v1/zones/{zone['id']}", json={"name": "x"}, headers=headers)
        ).status_code == 403
        assert api.delete(f"/api/v1/zones/{zone['id']}", headers=headers).status_code == 403
        assert api.get(f"/api/v1/zones/{zone['id']}", headers=headers).status_code == 200


def test_other_regions_zones_are_404_and_unlisted(api, world):
    admin, sup = world["admin"], world["supervisor"]
    southern = api.post(
        "/api/v1/zones",
        json={"kind": "exclusion", "geometry": SQUARE, "subject_id": world["s_subject"]},
        headers=admin,
    )
    assert southern.status_code == 201
    zid = southern.json()["id"]
    for headers in (sup, world["operator"]):
        assert api.get(f"/api/v1/zones/{zid}", headers=headers).status_code == 404
        listed = api.get("/api/v1/zones", params={"limit": 1000}, headers=headers).json()
        assert zid not in [z["id"] for z in listed]
        by_subject = api.get(
            "/api/v1/zones", params={"subject_id": world["s_subject"]}, headers=headers
        )
        assert by_subject.json() == []
    assert api.patch(f"/api/v1/zones/{zid}", json={"name": "x"}, headers=sup).status_code == 404
    assert (
        api.put(
            f"/api/v1/zones/{zid}",
            json={"kind": "exclusion", "geometry": SQUARE, "subject_id": world["n_subject"]},
            headers=sup,
        ).status_code
        == 404
    )
    assert api.delete(f"/api/v1/zones/{zid}", headers=sup).status_code == 404
    # a zone for the other region's subject is refused like an unknown subject
    refused = api.post(
        "/api/v1/zones",
        json={"kind": "exclusion", "geometry": SQUARE, "subject_id": world["s_subject"]},
        headers=sup,
    )
    assert refused.status_code == 422
    assert refused.json()["detail"]["reason"] == "unknown_subject"
    # moving one's own zone onto the other region's subject too
    own = api.post(
        "/api/v1/zones",
        json={"kind": "exclusion", "geometry": SQUARE, "subject_id": world["n_subject"]},
        headers=sup,
    ).json()
    moved = api.patch(
        f"/api/v1/zones/{own['id']}", json={"subject_id": world["s_subject"]}, headers=sup
    )
    assert moved.status_code == 422


def test_global_zones_need_every_region_to_write(api, world):
    admin, sup = world["admin"], world["supervisor"]
    body = {"kind": "exclusion", "geometry": SQUARE, "region_id": world["north"]}
    assert api.post("/api/v1/zones", json=body, headers=sup).status_code == 403
    north_global = api.post("/api/v1/zones", json=body, headers=admin)
    assert north_global.status_code == 201, north_global.text
    south_global = api.post(
        "/api/v1/zones", json={**body, "region_id": world["south"]}, headers=admin
    ).json()
    everyone = api.post(
        "/api/v1/zones", json={**body, "region_id": None, "group_name": "schools"}, headers=admin
    ).json()
    # the north sees its region's global zones and those of every region, not the south's
    operator = world["operator"]
    assert api.get(f"/api/v1/zones/{north_global.json()['id']}", headers=operator).status_code == (
        200
    )
    assert api.get(f"/api/v1/zones/{everyone['id']}", headers=operator).status_code == 200
    assert api.get(f"/api/v1/zones/{south_global['id']}", headers=operator).status_code == 404
    listed = [z["id"] for z in api.get("/api/v1/zones?limit=1000", headers=operator).json()]
    assert south_global["id"] not in listed
    assert everyone["id"] in listed
    # ... but cannot change them
    zid = north_global.json()["id"]
    assert api.patch(f"/api/v1/zones/{zid}", json={"name": "x"}, headers=sup).status_code == 403
    assert api.delete(f"/api/v1/zones/{zid}", headers=sup).status_code == 403
    unknown_region = api.post(
        "/api/v1/zones", json={**body, "region_id": fresh_id("nowhere")}, headers=admin
    )
    assert unknown_region.status_code == 422


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Polygon"},
        {"type": "Polygon", "coordinates": 5},
        {"type": "Polygon", "coordinates": [[["a", "b"], [1, 2], [3, 4], ["a", "b"]]]},
        {"type": "Polygon", "coordinates": [[[18.4, -33.9], [18.5, -33.9], [18.4, -33.8]]]},
        {"type": "MultiPolygon", "coordinates": [[]]},
        {"type": "LineString", "coordinates": [[18.4, -33.9], [18.5, -33.9]]},
        {"type": "Point", "coordinates": [18.4]},
        {"type": "Point", "coordinates": [18.4, 89.0]},
        {"coordinates": [18.4, -33.9]},
    ],
)
def test_malformed_geometry_is_422_never_500(api, world, geometry):
    body = {"kind": "inclusion", "geometry": geometry, "subject_id": world["n_subject"]}
    if geometry.get("type") == "Point":
        body["radius_m"] = 100
    response = api.post("/api/v1/zones", json=body, headers=world["supervisor"])
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["reasons"]


def test_victim_zone_follows_a_victim_in_reach(api, world):
    sup, admin = world["supervisor"], world["admin"]
    victim = api.post(
        "/api/v1/subjects", json={"name": fresh_id("v"), "region_id": world["north"]}, headers=admin
    ).json()["id"]
    body = {
        "kind": "victim",
        "radius_m": 500,
        "buffer_m": 1000,
        "subject_id": world["n_subject"],
        "victim_subject_id": victim,
    }
    created = api.post("/api/v1/zones", json=body, headers=sup)
    assert created.status_code == 201, created.text
    assert created.json()["victim_subject_id"] == victim
    assert created.json()["geometry"] is None
    missing = api.post("/api/v1/zones", json={**body, "victim_subject_id": None}, headers=sup)
    assert missing.status_code == 422
    far = api.post(
        "/api/v1/zones", json={**body, "victim_subject_id": world["s_subject"]}, headers=sup
    )
    assert far.status_code == 422
    assert far.json()["detail"]["reason"] == "unknown_victim"
    with_geometry = api.post("/api/v1/zones", json={**body, "geometry": SQUARE}, headers=sup)
    assert with_geometry.status_code == 422


def test_an_exclusion_zone_protects_a_victim(api, world, settings):
    """protects_subject_id: exclusion zones only, a victim in reach, never the zone's own subject;
    it marks the subject a victim (migration 0013) and survives a PATCH of something else."""
    sup, admin = world["supervisor"], world["admin"]
    victim = api.post(
        "/api/v1/subjects", json={"name": fresh_id("v"), "region_id": world["north"]}, headers=admin
    ).json()["id"]
    body = {
        "name": "victim's home, 3 Oak Road",
        "kind": "exclusion",
        "geometry": {"type": "Point", "coordinates": [18.42, -33.92]},
        "radius_m": 200,
        "subject_id": world["n_subject"],
        "protects_subject_id": victim,
    }
    created = api.post("/api/v1/zones", json=body, headers=sup)
    assert created.status_code == 201, created.text
    zone = created.json()
    assert zone["protects_subject_id"] == victim and zone["protects_victim"] is True
    assert zone["redacted"] is False
    with psycopg.connect(settings.database_url) as conn:
        marked = conn.execute("SELECT victim FROM subjects WHERE id = %s", (victim,)).fetchone()
    assert marked == (True,)
    renamed = api.patch(f"/api/v1/zones/{zone['id']}", json={"name": "x"}, headers=sup)
    assert renamed.status_code == 200 and renamed.json()["protects_subject_id"] == victim
    for change, reason in [
        ({"kind": "inclusion", "radius_m": 200}, "invalid_zone"),
        ({"protects_subject_id": world["n_subject"]}, "invalid_zone"),
        ({"protects_subject_id": world["s_subject"]}, "unknown_victim"),
    ]:
        refused = api.post("/api/v1/zones", json={**body, **change}, headers=sup)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["reason"] == reason, refused.text


def test_operators_and_tracers_see_victims_zones_redacted(api, world, settings):
    """They see that the zone exists (kind, owner, region), not where; supervisors see it whole,
    and each read names the victim in the audit log."""
    sup, admin = world["supervisor"], world["admin"]
    victim = api.post(
        "/api/v1/subjects",
        json={"name": fresh_id("v"), "region_id": world["north"], "victim": True},
        headers=admin,
    ).json()["id"]
    home = {"type": "Point", "coordinates": [18.4555, -33.9444]}
    zone = api.post(
        "/api/v1/zones",
        json={
            "name": "7 Fig Street",
            "kind": "exclusion",
            "geometry": home,
            "radius_m": 250,
            "buffer_m": 100,
            "schedule": NIGHTS,
            "subject_id": world["n_subject"],
            "protects_subject_id": victim,
        },
        headers=sup,
    ).json()
    for role in ("operator", "tracer"):
        one = api.get(f"/api/v1/zones/{zone['id']}", headers=world[role])
        listed = api.get(
            "/api/v1/zones", params={"subject_id": world["n_subject"]}, headers=world[role]
        )
        assert one.status_code == 200 and listed.status_code == 200
        assert one.json() in listed.json()
        shown = one.json()
        assert shown["redacted"] is True and shown["protects_victim"] is True
        assert (shown["kind"], shown["subject_id"], shown["region_id"]) == (
            "exclusion",
            world["n_subject"],
            world["north"],
        )
        for key in ("geometry", "radius_m", "buffer_m", "schedule", "protects_subject_id"):
            assert shown[key] is None, key
        assert shown["name"] == ""
        assert "Fig" not in one.text and "18.455" not in one.text and "-33.944" not in one.text
    whole = api.get(f"/api/v1/zones/{zone['id']}", headers=sup).json()
    assert whole["geometry"] == home and whole["schedule"] == NIGHTS and not whole["redacted"]
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT role, detail FROM audit_log WHERE action = 'victim_zone' AND subject_id = %s",
            (victim,),
        ).fetchall()
    assert {r[0] for r in rows} == {"supervisor"}, rows  # the write's answer and the read
    assert all(r[1]["zone_ids"] == [zone["id"]] and r[1]["victim"] is True for r in rows)
    assert {r[1]["via"] for r in rows} == {"write", "read"}


def test_a_curfew_zone_smaller_than_indoor_accuracy_is_stored_with_a_warning(api, world):
    """Issue 14: a home 20 m across cannot hold an indoor fix's accuracy circle. The zone is
    still created; the answer says why GPS will never verify presence there."""
    sup = world["supervisor"]
    lon, lat, d = 18.4722, -33.9379, 0.0001  # about 18 m by 22 m
    small = {
        "type": "Polygon",
        "coordinates": [
            [
                [lon - d, lat - d],
                [lon + d, lat - d],
                [lon + d, lat + d],
                [lon - d, lat + d],
                [lon - d, lat - d],
            ]
        ],
    }
    body = {
        "kind": "curfew",
        "geometry": small,
        "subject_id": world["n_subject"],
        "schedule": NIGHTS,
    }
    created = api.post("/api/v1/zones", json=body, headers=sup)
    assert created.status_code == 201, created.text
    assert len(created.json()["warnings"]) == 1
    assert "60 m" in created.json()["warnings"][0]
    zid = created.json()["id"]
    assert api.get(f"/api/v1/zones/{zid}", headers=sup).status_code == 200

    wide = api.put(
        f"/api/v1/zones/{zid}",
        json={**body, "geometry": SQUARE},
        headers=sup,
    )
    assert wide.status_code == 200, wide.text
    assert wide.json()["warnings"] == []
