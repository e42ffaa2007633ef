"""Hypothesis strategies for zones and fixes where geofences go wrong: near boundaries and holes,
multipolygons, tiny and huge zones, high latitudes, the antimeridian; and the shared settings.

TAGWATCH_HYPOTHESIS_SCALE multiplies the number of examples (CI runs the default, 1.0)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import pyproj
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tagwatch.geofence import Zone, ZoneKind

GEOD = pyproj.Geod(ellps="WGS84")
SCALE = float(os.environ.get("TAGWATCH_HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=os.environ.get("TAGWATCH_HYPOTHESIS_RANDOM") is None,
    )


SIZES = {
    "tiny": (2.0, 20.0),
    "small": (20.0, 500.0),
    "medium": (500.0, 5_000.0),
    "huge": (10_000.0, 60_000.0),
}


@st.composite
def centres(draw: st.DrawFn) -> tuple[float, float]:
    lat = draw(
        st.one_of(
            st.floats(-60.0, 60.0),
            st.floats(-84.0, 84.0),
            st.sampled_from([0.0, 45.0, -33.9, 60.0, 70.0, 78.0, -78.0, 84.0, -84.0]),
        )
    )
    lon = draw(
        st.one_of(
            st.floats(-180.0, 180.0),
            st.floats(179.0, 180.0),
            st.floats(-180.0, -179.0),
            st.sampled_from([180.0, -180.0, 0.0]),
        )
    )
    return lon, lat


def star_ring(
    lon: float, lat: float, radius: float, n: int, jitter: list[float], scale: list[float]
) -> list[list[float]]:
    """A star-shaped (hence simple) ring: n vertices at jittered, well separated angles."""
    angles = (np.arange(n) + np.asarray(jitter)) * (360.0 / n)
    radii = radius * np.asarray(scale)
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), angles, radii)
    ring = [[float(a), float(b)] for a, b in zip(lons, lats, strict=True)]
    return [*ring, ring[0]]


@st.composite
def star(
    draw: st.DrawFn, lon: float, lat: float, radius: float, max_vertices: int, min_vertices: int = 3
) -> list[list[float]]:
    """Angular gaps stay under 168 deg, so the centre is inside and the ring is simple; with six
    vertices or more the ring keeps a disc of 0.37 * radius around the centre inside."""
    n = draw(st.integers(min_vertices, max_vertices))
    jitter = draw(st.lists(st.floats(0.3, 0.7), min_size=n, max_size=n))
    scale = draw(st.lists(st.floats(0.5, 1.0), min_size=n, max_size=n))
    return star_ring(lon, lat, radius, n, jitter, scale)


@st.composite
def geometries(
    draw: st.DrawFn, near: tuple[float, float] | None = None
) -> tuple[dict[str, Any], float | None, tuple[float, float], float]:
    """(GeoJSON geometry, radius_m for a circle, centre, size in metres); ``near`` puts the zone
    within 20 km of a place."""
    if near is None:
        lon, lat = draw(centres())
    else:
        moved = GEOD.fwd(near[0], near[1], draw(st.floats(0.0, 360.0)), draw(st.floats(0.0, 20e3)))
        lon, lat = float(moved[0]), float(moved[1])
    size_name = draw(st.sampled_from(list(SIZES)))
    radius = draw(st.floats(*SIZES[size_name]))
    shapes = ["circle", "polygon", "polygon_hole", "multipolygon"]
    shape = draw(st.sampled_from(shapes if near is not None else [*shapes, "split"]))
    # Stay valid: zones reach at most 75 km from their centre and stay within +-85 deg.
    radius = min(radius, 20_000.0 if shape == "multipolygon" else 45_000.0)
    extent = radius * (3.3 if shape == "multipolygon" else 1.0) / 110_000.0
    lat = float(np.clip(lat, -84.9 + extent, 84.9 - extent))
    if shape == "circle":
        return {"type": "Point", "coordinates": [lon, lat]}, radius, (lon, lat), radius
    max_vertices = 60 if size_name in ("medium", "huge") else 12
    outer = draw(star(lon, lat, radius, max_vertices, 6 if shape == "polygon_hole" else 3))
    if shape == "polygon":
        return {"type": "Polygon", "coordinates": [outer]}, None, (lon, lat), radius
    if shape == "polygon_hole":
        hole = draw(star(lon, lat, radius * 0.3, 8))
        return {"type": "Polygon", "coordinates": [outer, hole[::-1]]}, None, (lon, lat), radius
    if shape == "multipolygon":
        azimuth = draw(st.floats(0.0, 360.0))
        lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth, radius * 2.2)
        second = draw(star(float(lon2), float(lat2), radius, 10))
        geometry = {"type": "MultiPolygon", "coordinates": [[outer], [second]]}
        return geometry, None, (lon, lat), radius * 3.3
    # A rectangle across the antimeridian, split into two touching parts as RFC 7946 asks.
    width = radius / (111_000.0 * max(np.cos(np.radians(lat)), 0.1))
    height = radius / 111_000.0
    south = max(min(lat, 84.0 - height), -84.0)
    north = south + height
    east_edge = -180.0 + width * draw(st.floats(0.2, 0.8))
    west_edge = 180.0 - width * draw(st.floats(0.2, 0.8))
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [
            [
                [
                    [west_edge, south],
                    [180.0, south],
                    [180.0, north],
                    [west_edge, north],
                    [west_edge, south],
                ]
            ],
            [
                [
                    [-180.0, south],
                    [east_edge, south],
                    [east_edge, north],
                    [-180.0, north],
                    [-180.0, south],
                ]
            ],
        ],
    }
    return geometry, None, (180.0, (south + north) / 2), radius


def boundary_points(geometry: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    """Edges of every ring as (lon0, lat0, lon1, lat1)."""
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )
    edges = []
    for rings in polygons:
        for ring in rings:
            for a, b in itertools.pairwise(ring):
                edges.append((a[0], a[1], b[0], b[1]))
    return edges


@st.composite
def fixes_near(
    draw: st.DrawFn,
    geometry: dict[str, Any],
    radius_m: float | None,
    centre: tuple[float, float],
    size: float,
) -> tuple[float, float, float]:
    """(lon, lat, acc): mostly within a few tens of metres of the boundary."""
    acc = draw(
        st.one_of(
            st.sampled_from([0.0, 1.0, 5.0, 10.0, 30.0]),
            st.floats(0.0, 100.0),
            st.sampled_from([500.0, 3000.0]),
        )
    )
    mode = draw(st.sampled_from(["edge", "edge", "edge", "centre", "around", "far"]))
    lon, lat = centre
    if mode == "edge":
        if radius_m is not None:
            azimuth = draw(st.floats(0.0, 360.0))
            lon, lat, _ = GEOD.fwd(lon, lat, azimuth, radius_m)
        else:
            edges = boundary_points(geometry)
            lon0, lat0, lon1, lat1 = edges[draw(st.integers(0, len(edges) - 1))]
            t = draw(st.floats(0.0, 1.0))
            dlon = (lon1 - lon0 + 180.0) % 360.0 - 180.0
            lon = (lon0 + t * dlon + 180.0) % 360.0 - 180.0
            lat = lat0 + t * (lat1 - lat0)
        offset = draw(st.one_of(st.floats(0.0, 2.0), st.floats(0.0, acc + 60.0)))
    elif mode == "centre":
        offset = draw(st.floats(0.0, size * 0.3))
    elif mode == "around":
        offset = draw(st.floats(0.0, size * 2.0))
    else:
        offset = draw(st.floats(size, size + 12_000.0))
    azimuth = draw(st.floats(0.0, 360.0))
    lon, lat, _ = GEOD.fwd(lon, lat, azimuth, offset)
    lat = float(np.clip(lat, -89.9, 89.9))
    return float(lon), float(lat), float(acc)


@st.composite
def zone_with_fixes(
    draw: st.DrawFn, zone_id: int = 1, subject_id: int | None = 1
) -> tuple[Zone, list[tuple[float, float, float]]]:
    geometry, radius, centre, size = draw(geometries())
    kind = draw(st.sampled_from([ZoneKind.EXCLUSION, ZoneKind.INCLUSION]))
    buffer = (
        draw(st.one_of(st.none(), st.floats(1.0, 2_000.0))) if kind is ZoneKind.EXCLUSION else None
    )
    zone = Zone(zone_id, kind, geometry, radius_m=radius, buffer_m=buffer, subject_id=subject_id)
    fixes = draw(st.lists(fixes_near(geometry, radius, centre, size), min_size=1, max_size=8))
    return zone, fixes
