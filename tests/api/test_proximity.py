"""Crime-scene correlation: exactly the subjects within the radius, in the caller's regions,
with their closest fix; the search is audited; bad input is a 422 with a reason."""

from __future__ import annotations

import math
from datetime import datetime

import psycopg
import pytest

from tagwatch.api.routes.proximity import EARTH_RADIUS_M, bounding_box
from tests.support import fresh_id

pytestmark = pytest.mark.integration

LAT, LON = 48.2082, 16.3738
RADIUS = 500.0
WINDOW = {"from": "2025-05-01T00:00:00Z", "to": "2025-05-02T00:00:00Z"}


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


def north_of(metres: float) -> tuple[float, float]:
    """A point ``metres`` due north of the scene (haversine distance exactly that)."""
    return LAT + math.degrees(metres / EARTH_RADIUS_M), LON


def east_of(metres: float) -> tuple[float, float]:
    """A point ``metres`` due east along the parallel is farther than the great circle; find the
    longitude whose haversine distance is ``metres``."""
    angle = metres / EARTH_RADIUS_M
    dlon = 2 * math.asin(math.sin(angle / 2) / math.cos(math.radians(LAT)))
    return LAT, LON + math.degrees(dlon)


def north_east_of(metres: float) -> tuple[float, float]:
    """Bearing 45 degrees: inside the bounding box's corner, so only the distance decides."""
    angle, lat1, bearing = metres / EARTH_RADIUS_M, math.radians(LAT), math.radians(45)
    lat2 = math.asin(
        math.sin(lat1) * math.cos(angle) + math.cos(lat1) * math.sin(angle) * math.cos(bearing)
    )
    lon2 = math.radians(LON) + math.atan2(
        math.sin(bearing) * math.sin(angle) * math.cos(lat1),
        math.cos(angle) - math.sin(lat1) * math.sin(lat2),
    )
    return math.degrees(lat2), math.degrees(lon2)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def scene(settings):
    """Two regions; subjects inside, just outside, elsewhere, outside the window, unassigned."""
    north, south = fresh_id("pn"), fresh_id("ps")
    ids: dict[str, int] = {}
    with psycopg.connect(settings.database_url) as conn:
        for region in (north, south):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))

        def subject(key: str, region: str, fixes: list[tuple[str, tuple[float, float]]]) -> None:
            row = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (key, region),
            ).fetchone()
            assert row is not None
            ids[key] = row[0]
            device = fresh_id("px")
            conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
            held_until = "2025-05-01T18:00:00Z" if key == "unassigned_later" else None
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, 'offender', tstzrange(%s, %s))",
                (device, row[0], at("2025-04-01T00:00:00Z"), held_until and at(held_until)),
            )
            for ts, (lat, lon) in fixes:
                conn.execute(
                    "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, 8)",
                    (device, at(ts), lat, lon),
                )

        subject(
            "inside",
            north,
            [
                ("2025-05-01T10:00:00Z", north_of(495)),
                ("2025-05-01T11:00:00Z", east_of(300)),
                ("2025-05-01T12:00:00Z", north_of(2000)),
                ("2025-04-30T23:00:00Z", north_of(5)),  # before the window
            ],
        )
        subject("just_inside_east", north, [("2025-05-01T09:00:00Z", east_of(497))])
        subject(
            "just_outside",
            north,
            [("2025-05-01T10:00:00Z", north_of(505)), ("2025-05-01T10:05:00Z", north_east_of(520))],
        )
        subject("outside_window", north, [("2025-05-02T00:00:00Z", north_of(10))])
        subject("elsewhere", south, [("2025-05-01T10:00:00Z", north_of(100))])
        # The device was handed back at 18:00; a fix after that is not this subject's.
        subject("unassigned_later", north, [("2025-05-01T19:00:00Z", north_of(20))])
    return north, south, ids


def search(api, headers, **extra):
    params = {"lat": LAT, "lon": LON, "radius_m": RADIUS, **WINDOW, **extra}
    return api.get("/api/v1/proximity", params=params, headers=headers)


def test_finds_exactly_the_subjects_within_the_radius(api, as_, scene, settings):
    north, _south, ids = scene
    reason = fresh_id("burglary")
    response = search(api, as_("tracer", [north]), reason=reason)
    assert response.status_code == 200, response.text
    found = {s["subject_id"]: s for s in response.json()["subjects"]}
    assert set(found) == {ids["inside"], ids["just_inside_east"]}
    inside = found[ids["inside"]]
    assert inside["fixes_within"] == 2
    assert datetime.fromisoformat(inside["closest"]["ts"]) == at("2025-05-01T11:00:00Z")
    assert inside["closest"]["distance_m"] == pytest.approx(300, abs=0.05)
    assert (inside["closest"]["lat"], inside["closest"]["lon"]) == pytest.approx(east_of(300))
    assert inside["closest"]["acc"] == 8
    assert found[ids["just_inside_east"]]["closest"]["distance_m"] == pytest.approx(497, abs=0.05)
    # nearest first
    assert [s["subject_id"] for s in response.json()["subjects"]] == [
        ids["inside"],
        ids["just_inside_east"],
    ]

    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT role, action, subject_id, detail FROM audit_log"
            " WHERE detail->>'reason' = %s ORDER BY id",
            (reason,),
        ).fetchall()
    assert [r[2] for r in rows] == [None, *sorted(found)]
    role, action, _subject, detail = rows[0]
    assert (role, action) == ("tracer", "proximity")
    assert detail["lat"] == LAT and detail["lon"] == LON and detail["radius_m"] == RADIUS
    assert detail["start"] == "2025-05-01T00:00:00+00:00"
    assert detail["end"] == "2025-05-02T00:00:00+00:00"
    assert sorted(detail["subject_ids"]) == sorted(found)


def test_other_regions_are_excluded_and_all_regions_included(api, as_, scene):
    north, south, ids = scene
    southern = search(api, as_("operator", [south])).json()["subjects"]
    assert [s["subject_id"] for s in southern] == [ids["elsewhere"]]
    everyone = {s["subject_id"] for s in search(api, as_("admin", ["*"])).json()["subjects"]}
    assert {ids["inside"], ids["just_inside_east"], ids["elsewhere"]} <= everyone
    assert ids["just_outside"] not in everyone
    assert ids["outside_window"] not in everyone
    assert ids["unassigned_later"] not in everyone
    both = search(api, as_("supervisor", [north, south])).json()["subjects"]
    assert {s["subject_id"] for s in both} == {
        ids["inside"],
        ids["just_inside_east"],
        ids["elsewhere"],
    }


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"radius_m": 0.5}, "radius_out_of_range"),
        ({"radius_m": 50_001}, "radius_out_of_range"),
        ({"from": "2025-05-01T00:00:00Z", "to": "2025-06-01T00:00:01Z"}, "window_too_long"),
        ({"from": "2025-05-02T00:00:00Z", "to": "2025-05-01T00:00:00Z"}, "empty_window"),
        ({"from": "2025-05-01T00:00:00Z", "to": "2025-05-01T00:00:00Z"}, "empty_window"),
        ({"from": "2025-05-01T00:00:00"}, None),  # naive time
        ({"lat": 91}, None),
        ({"lon": "east"}, None),
    ],
)
def test_bad_input_is_422_with_a_reason(api, as_, scene, extra, reason):
    response = search(api, as_("operator", [scene[0]]), **extra)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if reason:
        assert detail["reason"] == reason
        assert detail["message"]
    else:
        assert detail and detail[0]["msg"]


def test_needs_a_token_and_the_31_day_window_is_allowed(api, as_, scene):
    assert search(api, {}).status_code == 401
    month = search(
        api,
        as_("operator", [scene[0]]),
        **{"from": "2025-05-01T00:00Z", "to": "2025-06-01T00:00Z"},
    )
    assert month.status_code == 200


def test_bounding_box_crosses_the_antimeridian_and_holds_the_poles():
    box = bounding_box(0.0, 179.999, 1000)
    assert box["lon_max"] == 180.0
    assert -180.0 < box["lon_max2"] < -179.99
    assert box["lon_min2"] == -180.0
    polar = bounding_box(89.999, 0.0, 1000)
    assert polar["lon_any"] is True
    assert polar["lat_max"] == 90.0


def test_the_closest_fix_says_when_it_arrived_and_late_fixes_are_counted(api, as_, settings):
    """A tag's buffered upload still places its wearer at the scene, but the answer says so."""
    region = fresh_id("pl")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))
        subject = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES ('late', %s) RETURNING id", (region,)
        ).fetchone()[0]
        device = fresh_id("px")
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, subject, at("2025-04-01T00:00:00Z")),
        )
        for ts, metres, received in (
            ("2025-05-01T10:00:00Z", 50, "2025-05-01T10:00:02Z"),  # on time, closest
            ("2025-05-01T10:01:00Z", 80, "2025-05-01T16:00:00Z"),  # uploaded six hours later
        ):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc, received_at)"
                " VALUES (%s, %s, %s, %s, 8, %s)",
                (device, at(ts), *north_of(metres), at(received)),
            )
    body = search(api, as_("operator", [region])).json()
    [found] = body["subjects"]
    assert found["fixes_within"] == 2
    assert found["late_fixes_within"] == 1
    assert found["closest"]["late"] is False
    assert at(found["closest"]["received_at"]) == at("2025-05-01T10:00:02Z")
