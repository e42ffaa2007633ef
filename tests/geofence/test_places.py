"""geofence.places: which areas hold a position, the nearest office, and the routing choice,
against pyproj.Geod directly and properties that must hold for any offices and positions."""

from __future__ import annotations

import pyproj
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tagwatch.geofence import ZoneValidationError
from tagwatch.geofence.places import (
    Area,
    Office,
    PlaceError,
    Places,
    RegionArea,
    distance_text,
    office_from_row,
)
from tests.geofence.strategies import centres, examples

GEOD = pyproj.Geod(ellps="WGS84")


def square(lon: float, lat: float, half_deg: float) -> dict:
    ring = [
        [wrap(lon - half_deg), lat - half_deg],
        [wrap(lon + half_deg), lat - half_deg],
        [wrap(lon + half_deg), lat + half_deg],
        [wrap(lon - half_deg), lat + half_deg],
        [wrap(lon - half_deg), lat - half_deg],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def wrap(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


@st.composite
def office_sets(draw: st.DrawFn) -> list[Office]:
    lon0, lat0 = draw(centres())
    lat0 = max(-80.0, min(80.0, lat0))
    n = draw(st.integers(1, 8))
    offices = []
    for i in range(n):
        az = draw(st.floats(0, 360))
        dist = draw(st.floats(0, 300_000))
        lon, lat, _ = GEOD.fwd(lon0, lat0, az, dist)
        radius = draw(st.floats(1_000, 100_000))
        offices.append(Office(i + 1, f"Office {i + 1}", "r", wrap(lon), lat, None, radius))
    return offices


@given(office_sets(), centres())
@examples(150)
def test_the_nearest_office_is_never_farther_than_any_other(offices, point):
    lon, lat = point
    assume(abs(lat) <= 84)
    where = Places([], offices).locate(lon, lat)
    assert where.nearest is not None
    for office in offices:
        _, _, d = GEOD.inv(lon, lat, office.lon, office.lat)
        assert where.nearest.distance_m <= d + 1e-6
        if office is where.nearest.office:
            assert abs(where.nearest.distance_m - d) < 1e-3


@given(centres(), st.floats(0.001, 1.0), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
@examples(150)
def test_a_point_inside_a_service_area_is_served(centre, half_deg, fx, fy):
    lon, lat = centre
    assume(abs(lat) + half_deg <= 84)
    office = office_from_row(7, "Square", "r", lon, lat, square(lon, lat, half_deg), None)
    # a point strictly inside the square, its longitude wrapped into -180..180
    px = wrap(lon - half_deg + 2 * half_deg * fx)
    py = lat - half_deg + 2 * half_deg * fy
    where = Places([], [office]).locate(px, py)
    assert [d.office.office_id for d in where.serving] == [7]


@given(centres(), st.floats(100, 200_000), st.floats(0, 360), st.floats(0.0, 0.98))
@examples(150)
def test_a_service_radius_holds_what_lies_within_it_and_nothing_beyond(centre, radius, az, f):
    lon, lat = centre
    assume(abs(lat) <= 80)
    office = Office(1, "Round", "r", lon, lat, None, radius)
    inside = GEOD.fwd(lon, lat, az, radius * f)
    outside = GEOD.fwd(lon, lat, az, radius * (1.02 + f))
    places = Places([], [office])
    assert places.locate(wrap(inside[0]), inside[1]).serving
    assert not places.locate(wrap(outside[0]), outside[1]).serving


@given(office_sets(), centres(), st.floats(0, 400_000))
@examples(150)
def test_routing_prefers_a_serving_office_else_the_nearest_within_reach(offices, point, reach):
    lon, lat = point
    assume(abs(lat) <= 84)
    places = Places([], offices)
    where = places.locate(lon, lat)
    route = places.route(lon, lat, None, reach)
    if where.serving:
        assert route is not None and route.within_service_area
        assert route.office == where.serving[0].office
        assert all(route.distance_m <= d.distance_m for d in where.serving)
    elif where.nearest is not None and where.nearest.distance_m <= reach:
        assert route is not None and route.office == where.nearest.office
        assert not route.within_service_area
    else:
        assert route is None


def test_regions_and_the_routing_reason():
    west = RegionArea("west", Area.from_geojson(square(18.5, -33.5, 0.5)))
    north = RegionArea("north", Area.from_geojson(square(20.0, -29.0, 1.0)))
    paarl = Office(3, "Paarl", "west", 18.96, -33.73, None, 40_000)
    kimberley = Office(4, "Kimberley", "north", 20.0, -29.0, None, 10_000)
    places = Places([north, west], [kimberley, paarl])
    lon, lat = 18.7, -33.5  # about 32 km from Paarl
    where = places.locate(lon, lat)
    assert where.regions == ("west",)
    assert [d.office.name for d in where.serving] == ["Paarl"]
    route = places.route(lon, lat, "north", 50_000)
    assert route is not None
    _, _, d = GEOD.inv(lon, lat, 18.96, -33.73)
    assert route.distance_m == pytest.approx(d, abs=1e-3)
    km = f"{d / 1000:.0f} km"
    assert route.reason == (
        f"position {km} from Paarl, inside its service area, in region west,"
        " outside the home region"
    )
    body = route.to_json()
    assert body["office"] == "Paarl" and body["distance_m"] == round(d)
    assert body["outside_home_region"] is True and body["home_region"] == "north"
    # at home: said so; a home region without a boundary: nothing said about it
    assert places.route(lon, lat, "west", 50_000).reason.endswith("inside the home region")
    assert places.route(lon, lat, "south", 50_000).outside_home_region is None
    # nobody serves a point 60 km out to sea; the nearest is beyond the reach
    assert places.route(17.6, -34.2, "west", 50_000) is None
    near = places.route(17.6, -34.2, "west", 200_000)
    assert near is not None and "the nearest office" in near.reason


def test_an_area_across_the_antimeridian_holds_points_on_both_sides():
    ring = [[179.5, -17.0], [-179.5, -17.0], [-179.5, -16.0], [179.5, -16.0], [179.5, -17.0]]
    fiji = Area.from_geojson({"type": "Polygon", "coordinates": [ring]})
    assert fiji.contains(179.8, -16.5) and fiji.contains(-179.8, -16.5)
    assert not fiji.contains(0.0, -16.5) and not fiji.contains(178.0, -16.5)


def test_areas_of_any_size_are_checked_by_the_zone_rules():
    # a region far larger than a zone may be (75 km reach) is fine
    Area.from_geojson(square(25.0, -29.0, 3.0))
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    for bad, words in [
        (bow_tie, "invalid polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0.5]]]}, "not closed"),
        ({"type": "Point", "coordinates": [0, 0]}, "not Polygon or MultiPolygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]}, "longitude"),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", "GeoJSON object"),
    ]:
        with pytest.raises(ZoneValidationError) as info:
            Area.from_geojson(bad)
        assert any(words in r for r in info.value.reasons), info.value.reasons


def test_offices_refuse_what_cannot_be_served():
    with pytest.raises(PlaceError, match="one of them"):
        Office(1, "x", "r", 0.0, 0.0, None, None)
    with pytest.raises(PlaceError, match="service_radius_m"):
        Office(1, "x", "r", 0.0, 0.0, None, -5.0)
    with pytest.raises(PlaceError, match="lat"):
        Office(1, "x", "r", 0.0, 95.0, None, 100.0)
    with pytest.raises(PlaceError, match="lon"):
        Places([], []).locate(float("nan"), 0.0)


def test_distances_read_as_a_person_says_them():
    assert [distance_text(m) for m in (850.4, 3_240.0, 31_012.0)] == ["850 m", "3.2 km", "31 km"]
