"""The metric projection against the geodesic (pyproj.Geod on WGS84).

The contract: within 0.5 m of the geodesic for distances up to 10 km, at any latitude a subject
could be monitored (tested from -80 to 80, and to the +-85 deg zone limit), and across the
antimeridian. geofence/_projection.py documents a tighter bound, which is what is asserted here:

* polygon zones: two points each within FRAME_REACH_M (75 km zone reach + 10 km) of their zone's
  frame centre, up to 10 km apart: the frame distance is within BOUND_M = 0.30 m of the geodesic
  (the azimuthal-equidistant stretch across the radial direction, (rho / R)**2 / 6, is 0.297 m for
  a 10 km chord at 85 km from the centre; the fixed worst cases below reach 0.2985 m);
* distances from the frame centre, and circle tests (the chord rule): within CHORD_BOUND_M.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwatch.geofence import FixBatch, Zone, ZoneIndex, ZoneKind
from tagwatch.geofence._projection import (
    chord_distance,
    ecef,
    frame_params,
    frame_to_lonlat,
    lonlat_to_frame,
    mean_radius,
)
from tests.geofence import reference
from tests.geofence.strategies import GEOD, examples

CONTRACT_M = 0.5
BOUND_M = 0.30
CHORD_BOUND_M = 0.01
FRAME_REACH_M = 85_000.0
ZONE_REACH_M = 75_000.0
MAX_DISTANCE_M = 10_000.0
T0 = 1_795_000_000.0

HIGH_LATITUDES = [-80.0, -78.0, -75.0, -72.0, -70.0, 70.0, 72.0, 75.0, 78.0, 80.0]
LATITUDES = [*HIGH_LATITUDES, -60.0, -45.0, -33.9, 0.0, 30.0, 51.5, 60.0]
ANTIMERIDIAN = [179.99, -179.99, 180.0, -180.0]


def frame_error(
    lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """|frame distance - geodesic distance| for each pair of points, in a frame at (lon0, lat0)."""
    frame = frame_params(lon0, lat0)
    x1, y1 = lonlat_to_frame(lon, lat, frame)
    x2, y2 = lonlat_to_frame(lon2, lat2, frame)
    _, _, geodesic = GEOD.inv(lon, lat, lon2, lat2)
    return np.asarray(np.abs(np.hypot(x1 - x2, y1 - y2) - geodesic))


def around(
    lon0: float, lat0: float, azimuth: np.ndarray, metres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lon, lat, back = GEOD.fwd(
        np.full(azimuth.size, lon0), np.full(azimuth.size, lat0), azimuth, metres
    )
    return np.asarray(lon), np.asarray(lat), np.asarray(back)


# ------------------------------------------------------------------ the property


@st.composite
def frame_centres(draw: st.DrawFn) -> tuple[float, float]:
    lat = draw(
        st.one_of(
            st.floats(-80.0, 80.0),
            st.floats(70.0, 80.0),
            st.floats(-80.0, -70.0),
            st.sampled_from(LATITUDES),
        )
    )
    lon = draw(
        st.one_of(
            st.floats(-180.0, 180.0),
            st.floats(179.9, 180.0),
            st.floats(-180.0, -179.9),
            st.sampled_from(ANTIMERIDIAN),
        )
    )
    return lon, lat


@examples(200)
@given(
    centre=frame_centres(),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([ZONE_REACH_M, FRAME_REACH_M - MAX_DISTANCE_M, 20_000.0, 1_000.0]),
)
def test_frame_distances_up_to_10_km_are_within_the_bound(
    centre: tuple[float, float], seed: int, spread: float
) -> None:
    """A batch of pairs per example: the first point anywhere within the zone reach of the frame
    centre, the second up to 10 km from it in any direction (so up to 85 km from the centre)."""
    lon0, lat0 = centre
    rng = np.random.default_rng(seed)
    n = 256
    lon, lat, _ = around(lon0, lat0, rng.uniform(0, 360, n), spread * np.sqrt(rng.random(n)))
    distance = np.where(rng.random(n) < 0.5, MAX_DISTANCE_M, rng.uniform(0, MAX_DISTANCE_M, n))
    lon2, lat2, _ = around_each(lon, lat, rng.uniform(0, 360, n), distance)
    error = frame_error(lon0, lat0, lon, lat, lon2, lat2)
    assert error.max() <= BOUND_M, (error.max(), int(error.argmax()))


def around_each(
    lon: np.ndarray, lat: np.ndarray, azimuth: np.ndarray, metres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, c = GEOD.fwd(lon, lat, azimuth, metres)
    return np.asarray(a), np.asarray(b), np.asarray(c)


@examples(150)
@given(centre=frame_centres(), seed=st.integers(0, 2**32 - 1))
def test_circle_distances_are_geodesic(centre: tuple[float, float], seed: int) -> None:
    """The chord rule (circles, victims, and distances from a frame centre), to 85 km."""
    lon0, lat0 = centre
    rng = np.random.default_rng(seed)
    n = 256
    metres = rng.uniform(0, FRAME_REACH_M, n)
    lon, lat, _ = around(lon0, lat0, rng.uniform(0, 360, n), metres)
    x, y, z = ecef(lon, lat)
    x0, y0, z0 = ecef(lon0, lat0)
    chord = chord_distance(x, y, z, x0, y0, z0, float(0.5 / mean_radius(lat0)))
    assert np.abs(chord - metres).max() <= CHORD_BOUND_M
    fx, fy = lonlat_to_frame(lon, lat, frame_params(lon0, lat0))
    assert np.abs(np.hypot(fx, fy) - metres).max() <= CHORD_BOUND_M


# ------------------------------------------------------------------ fixed worst cases


def tangential_chords(lon0: float, lat0: float, rho: float, length: float) -> np.ndarray:
    """Errors of chords of ``length`` whose both ends are ``rho`` from the centre, at every half
    degree of azimuth: the direction in which the projection stretches most."""
    azimuth = np.arange(0.0, 360.0, 0.5)
    middle = np.sqrt(rho**2 - (length / 2) ** 2)
    lon_m, lat_m, back = around(lon0, lat0, azimuth, np.full(azimuth.size, middle))
    half = np.full(azimuth.size, length / 2)
    lon1, lat1, _ = around_each(lon_m, lat_m, back + 90.0, half)
    lon2, lat2, _ = around_each(lon_m, lat_m, back - 90.0, half)
    return frame_error(lon0, lat0, lon1, lat1, lon2, lat2)


@pytest.mark.parametrize("lon0", [179.99, -179.99, 180.0, 0.0])
@pytest.mark.parametrize("lat0", [-84.9, *LATITUDES, 84.9])
def test_worst_case_tangential_chords(lat0: float, lon0: float) -> None:
    worst = float(tangential_chords(lon0, lat0, FRAME_REACH_M, MAX_DISTANCE_M).max())
    assert worst <= BOUND_M <= CONTRACT_M
    # The bound is tight: the stretch really is (rho / R)**2 / 6 per metre out there.
    stretch = (FRAME_REACH_M / float(mean_radius(lat0))) ** 2 / 6
    assert worst == pytest.approx(stretch * MAX_DISTANCE_M, rel=0.03)
    # Within a zone's own reach it is smaller still.
    assert tangential_chords(lon0, lat0, ZONE_REACH_M, MAX_DISTANCE_M).max() <= 0.24


def test_the_measured_worst_case_over_all_latitudes() -> None:
    """The figure docs/geofence.md quotes: the largest error over every latitude (1 deg steps to
    the +-85 deg zone limit) and the antimeridian."""
    worst = max(
        float(tangential_chords(lon0, float(lat0), FRAME_REACH_M, MAX_DISTANCE_M).max())
        for lat0 in np.arange(-85.0, 85.5, 1.0)
        for lon0 in (179.99, -179.99)
    )
    assert 0.29 <= worst <= BOUND_M, worst


@pytest.mark.parametrize("lat0", [-80.0, -70.0, 0.0, 70.0, 80.0])
def test_across_the_antimeridian(lat0: float) -> None:
    """A frame on one side of the antimeridian, points on the other: no seam, no wrap."""
    frame = frame_params(179.99, lat0)
    x_east, y_east = lonlat_to_frame(np.array([180.0, -179.98]), np.array([lat0, lat0]), frame)
    x_west, y_west = lonlat_to_frame(np.array([-180.0, 179.98]), np.array([lat0, lat0]), frame)
    assert x_east[0] == pytest.approx(x_west[0], abs=1e-6)
    assert y_east[0] == pytest.approx(y_west[0], abs=1e-6)
    # 0.03 deg east of the frame centre is 0.03 deg of longitude, the short way, not 359.97 deg
    _, _, metres = GEOD.inv(179.99, lat0, -179.98, lat0)
    assert float(np.hypot(x_east[1], y_east[1])) == pytest.approx(metres, abs=CHORD_BOUND_M)
    assert x_east[1] > 0 > x_west[1]
    lon = np.array([179.95, -179.95, 180.0, -179.999])
    lat = np.full(4, lat0 + 0.01)
    error = frame_error(179.99, lat0, lon, lat, lon[::-1], lat[::-1])
    assert error.max() <= 0.01


def test_frame_to_lonlat_inverts_the_projection() -> None:
    for lon0, lat0 in [(179.99, 78.0), (-179.99, -80.0), (18.42, -33.92), (0.0, 0.0)]:
        frame = frame_params(lon0, lat0)
        x = np.array([0.0, 1_000.0, -75_000.0, 50_000.0, 84_000.0])
        y = np.array([0.0, -2_000.0, 30_000.0, -60_000.0, 1.0])
        lon, lat = frame_to_lonlat(x, y, frame)
        x2, y2 = lonlat_to_frame(lon, lat, frame)
        np.testing.assert_allclose(x2, x, atol=1e-4)
        np.testing.assert_allclose(y2, y, atol=1e-4)
        assert (np.abs(lon) <= 180.0).all()


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize(("lon0", "lat0"), [(179.99, 80.0), (-179.99, -80.0), (180.0, 72.0)])
def test_a_75_km_circle_is_measured_geodesically(lon0: float, lat0: float) -> None:
    radius = 75_000.0
    zone = Zone(
        1,
        ZoneKind.INCLUSION,
        {"type": "Point", "coordinates": [lon0, lat0]},
        radius_m=radius,
        subject_id=1,
    )
    index = ZoneIndex.build([zone], [(1, "UTC", ())])
    azimuth = np.arange(0.0, 360.0, 7.5)
    offset = np.resize([-10_000.0, -0.4, 0.4, 10_000.0], azimuth.size)
    lon, lat, _ = around(lon0 if lon0 != 180.0 else -180.0, lat0, azimuth, radius + offset)
    n = lon.size
    r = index.classify(FixBatch(np.ones(n, np.int64), lon, lat, np.zeros(n), np.full(n, T0)))
    np.testing.assert_allclose(r.distance_m, offset, atol=CHORD_BOUND_M)


def square_zone(lon0: float, lat0: float, half_m: float) -> dict[str, object]:
    """A lon/lat rectangle around (lon0, lat0), ``half_m`` north-south and east-west of it."""
    dlat = half_m / 111_000.0
    dlon = dlat / np.cos(np.radians(lat0))
    corners = [(-dlon, -dlat), (dlon, -dlat), (dlon, dlat), (-dlon, dlat), (-dlon, -dlat)]
    ring = [[float((lon0 + a + 180.0) % 360.0 - 180.0), float(lat0 + b)] for a, b in corners]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.mark.parametrize(
    ("lon0", "lat0"), [(180.0, 78.0), (179.99, -80.0), (-179.99, 70.0), (0.0, 0.0)]
)
def test_a_large_polygon_across_the_antimeridian_matches_the_reference(
    lon0: float, lat0: float
) -> None:
    """A rectangle reaching 71 km from its centre; fixes within 10 km of its boundary, compared
    with the slow reference (pyproj aeqd centred on each fix: its distances from the fix are
    geodesic)."""
    geometry = square_zone(lon0, lat0, 50_000.0)
    zone = Zone(1, ZoneKind.INCLUSION, geometry, subject_id=1)
    index = ZoneIndex.build([zone], [(1, "UTC", ())])
    rng = np.random.default_rng(int(abs(lat0) * 100 + abs(lon0)))
    ring = np.asarray(geometry["coordinates"][0])  # type: ignore[index]
    edge = rng.integers(0, 4, 24)
    t = rng.uniform(0, 1, 24)
    a, b = ring[edge], ring[edge + 1]
    dlon = (b[:, 0] - a[:, 0] + 180.0) % 360.0 - 180.0
    lon_e = (a[:, 0] + t * dlon + 180.0) % 360.0 - 180.0
    lat_e = a[:, 1] + t * (b[:, 1] - a[:, 1])
    lon, lat, _ = around_each(
        lon_e, lat_e, rng.uniform(0, 360, 24), rng.uniform(0, MAX_DISTANCE_M, 24)
    )
    r = index.classify(FixBatch(np.ones(24, np.int64), lon, lat, np.zeros(24), np.full(24, T0)))
    want = np.array(
        [
            reference.polygon_signed_distance(geometry, float(x), float(y))
            for x, y in zip(lon, lat, strict=True)
        ]
    )
    assert np.abs(r.distance_m - want).max() <= CONTRACT_M
