"""Metres on the ground, never degrees: offsets, distances and shapes on the WGS84 ellipsoid.

Every metric quantity a simulator produces (a GPS error of 8 m, a 30 m near miss, a 500 m victim
radius) goes through the geodesic routines of pyproj, so a 30 m offset is 30 m at Cape Town's
latitude and at Leeds', not a fraction of a degree that happens to be right near the equator.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from pyproj import Geod

WGS84 = Geod(ellps="WGS84")

LonLat = tuple[float, float]


def offset(lon: float, lat: float, east_m: float, north_m: float) -> LonLat:
    """The point `east_m`, `north_m` away on the ground (geodesic, exact at any distance)."""
    distance = math.hypot(east_m, north_m)
    if distance == 0.0:
        return lon, lat
    azimuth = math.degrees(math.atan2(east_m, north_m))
    lon2, lat2, _ = WGS84.fwd(lon, lat, azimuth, distance)
    return float(lon2), float(lat2)


def destination(lon: float, lat: float, azimuth_deg: float, distance_m: float) -> LonLat:
    lon2, lat2, _ = WGS84.fwd(lon, lat, azimuth_deg, distance_m)
    return float(lon2), float(lat2)


def distance_m(a: LonLat, b: LonLat) -> float:
    _, _, metres = WGS84.inv(a[0], a[1], b[0], b[1])
    return float(metres)


def azimuth_deg(a: LonLat, b: LonLat) -> float:
    """Heading from a to b, 0–360 clockwise from north, as a tag reports `hdg`."""
    forward, _, _ = WGS84.inv(a[0], a[1], b[0], b[1])
    return float(forward) % 360.0


def east_north_m(origin: LonLat, point: LonLat) -> tuple[float, float]:
    """Where `point` lies from `origin`, in metres east and north along the geodesic."""
    forward, _, metres = WGS84.inv(origin[0], origin[1], point[0], point[1])
    angle = math.radians(float(forward))
    return float(metres) * math.sin(angle), float(metres) * math.cos(angle)


def densify(points: Sequence[LonLat], max_step_m: float = 1000.0) -> list[LonLat]:
    """Geodesic intermediate points, so that straight interpolation between neighbours in
    degrees stays within centimetres of the geodesic on long (highway) segments."""
    out: list[LonLat] = [points[0]]
    for a, b in itertools.pairwise(points):
        length = distance_m(a, b)
        steps = int(length // max_step_m)
        if steps > 0:
            out.extend((float(x), float(y)) for x, y in WGS84.npts(a[0], a[1], b[0], b[1], steps))
        out.append(b)
    return out


def box_ring(centre: LonLat, width_m: float, height_m: float) -> list[LonLat]:
    """A closed rectangle (east-west width, north-south height) around a place, lon-lat."""
    half_w, half_h = width_m / 2.0, height_m / 2.0
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    ring = [offset(centre[0], centre[1], east, north) for east, north in corners]
    ring.append(ring[0])
    return ring
