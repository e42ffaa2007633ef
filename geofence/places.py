"""Where a position is: which regions' areas and which offices' service areas hold it, which
office is nearest (metres on the ground), and to which office an alert there is routed.

Pure: checked geometries and office positions in, answers out; no database, no clock. The store
loads regions and offices (store/places.py) and the routing of critical alerts
(store/engine_repository.enqueue) asks `Places.route`.

Areas are GeoJSON Polygons or MultiPolygons of any size, checked by the zone rules
(`zones.check_area`): their edges are straight in longitude/latitude as RFC 7946 defines them,
so containment is a planar test in lon/lat, tried at the longitude and one turn either side
(an area drawn across the antimeridian keeps its longitudes unwrapped). A point on the boundary
counts as inside: an office whose service area ends at a road serves both of its sides.
Distances are geodesic on WGS84 (pyproj.Geod), one vectorized call over every office.

Routing picks one office: the nearest of those whose service area holds the position; failing
that, the nearest office if it lies within ``max_distance_m``; failing that, none. Ties go to the
lower office id, so the choice never depends on the order rows were read in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

from tagwatch.geofence.zones import MIN_RADIUS_M, check_area

WGS84 = Geod(ellps="WGS84")
MAX_SERVICE_RADIUS_M = 500_000.0
_TURNS = (0.0, 360.0, -360.0)


class PlaceError(ValueError):
    """A position, radius or office that cannot be used; ``reasons`` are sentences."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


@dataclass(frozen=True, slots=True, eq=False)
class Area:
    """A checked polygonal area (lon/lat), prepared for repeated containment tests."""

    geometry: BaseGeometry

    @classmethod
    def from_geojson(cls, geometry: object) -> Area:
        """Raises ZoneValidationError (a ValueError) with the geofence core's reasons."""
        lonlat, _ = check_area(geometry)
        shapely.prepare(lonlat)
        return cls(lonlat)

    def contains(self, lon: float, lat: float) -> bool:
        return any(bool(shapely.intersects_xy(self.geometry, lon + t, lat)) for t in _TURNS)


def position_problems(lon: object, lat: object) -> list[str]:
    """Why (lon, lat) is not a position on the globe; empty when it is."""
    for name, value, limit in (("lon", lon, 180.0), ("lat", lat, 90.0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{name} must be a number"]
        if not math.isfinite(value) or abs(value) > limit:
            return [f"{name} {value!r} is outside -{limit:g}..{limit:g}"]
    return []


def radius_problems(radius_m: object) -> list[str]:
    """Why ``radius_m`` cannot be a service radius; empty when it can."""
    if isinstance(radius_m, bool) or not isinstance(radius_m, int | float):
        return ["service_radius_m must be a number of metres"]
    if not math.isfinite(radius_m) or not MIN_RADIUS_M <= radius_m <= MAX_SERVICE_RADIUS_M:
        return [
            f"service_radius_m {radius_m!r} is outside {MIN_RADIUS_M:g}..{MAX_SERVICE_RADIUS_M:g} m"
        ]
    return []


@dataclass(frozen=True, slots=True)
class RegionArea:
    region_id: str
    area: Area


@dataclass(frozen=True, slots=True)
class Office:
    """An office at (lon, lat) serving ``service_area`` or everything within
    ``service_radius_m`` metres of it (exactly one of the two)."""

    office_id: int
    name: str
    region_id: str
    lon: float
    lat: float
    service_area: Area | None = None
    service_radius_m: float | None = None

    def __post_init__(self) -> None:
        reasons = position_problems(self.lon, self.lat)
        if (self.service_area is None) == (self.service_radius_m is None):
            reasons.append("an office serves a service_area or a service_radius_m (one of them)")
        elif self.service_radius_m is not None:
            reasons += radius_problems(self.service_radius_m)
        if reasons:
            raise PlaceError(reasons)


@dataclass(frozen=True, slots=True)
class OfficeDistance:
    office: Office
    distance_m: float
    serves: bool  # its service area holds the position


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """What the platform knows about a position."""

    lon: float
    lat: float
    regions: tuple[str, ...]  # regions whose area holds it, by id
    serving: tuple[OfficeDistance, ...]  # offices whose service area holds it, nearest first
    nearest: OfficeDistance | None  # the nearest office, serving or not


@dataclass(frozen=True, slots=True)
class Route:
    """The office an alert at a position goes to, and why, in words a tracer reads."""

    office: Office
    distance_m: float
    within_service_area: bool
    position_regions: tuple[str, ...]
    home_region: str | None
    outside_home_region: bool | None  # None: the home region has no boundary to tell
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "office": self.office.name,
            "office_id": self.office.office_id,
            "office_region": self.office.region_id,
            "distance_m": round(self.distance_m),
            "within_service_area": self.within_service_area,
            "position_regions": list(self.position_regions),
            "home_region": self.home_region,
            "outside_home_region": self.outside_home_region,
            "reason": self.reason,
        }


def distance_text(metres: float) -> str:
    """'850 m', '3.2 km', '31 km'."""
    if metres < 1000:
        return f"{metres:.0f} m"
    if metres < 10_000:
        return f"{metres / 1000:.1f} km"
    return f"{metres / 1000:.0f} km"


def geodesic_m(lon: float, lat: float, lons: Sequence[float], lats: Sequence[float]) -> Any:
    """Distances in metres on WGS84 from (lon, lat) to each of (lons, lats), as an array."""
    n = len(lons)
    if n == 0:
        return np.zeros(0)
    _, _, dist = WGS84.inv(
        np.full(n, lon, dtype=np.float64),
        np.full(n, lat, dtype=np.float64),
        np.asarray(lons, dtype=np.float64),
        np.asarray(lats, dtype=np.float64),
    )
    return np.asarray(dist, dtype=np.float64)


class Places:
    """Regions with an area and offices, ready to answer `locate` and `route`."""

    def __init__(self, regions: Sequence[RegionArea], offices: Sequence[Office]) -> None:
        self.regions = sorted(regions, key=lambda r: r.region_id)
        self.offices = sorted(offices, key=lambda o: o.office_id)
        self.bounded = frozenset(r.region_id for r in self.regions)
        self._lons = [o.lon for o in self.offices]
        self._lats = [o.lat for o in self.offices]

    def locate(self, lon: float, lat: float) -> Whereabouts:
        problems = position_problems(lon, lat)
        if problems:
            raise PlaceError(problems)
        distances = geodesic_m(lon, lat, self._lons, self._lats)
        found: list[OfficeDistance] = []
        for office, distance in zip(self.offices, distances, strict=True):
            if office.service_area is not None:
                serves = office.service_area.contains(lon, lat)
            else:
                assert office.service_radius_m is not None
                serves = bool(distance <= office.service_radius_m)
            found.append(OfficeDistance(office, float(distance), serves))
        by_distance = sorted(found, key=lambda d: (d.distance_m, d.office.office_id))
        return Whereabouts(
            lon=lon,
            lat=lat,
            regions=tuple(r.region_id for r in self.regions if r.area.contains(lon, lat)),
            serving=tuple(d for d in by_distance if d.serves),
            nearest=by_distance[0] if by_distance else None,
        )

    def route(
        self, lon: float, lat: float, home_region: str | None, max_distance_m: float
    ) -> Route | None:
        """The office to route an alert at (lon, lat) to (see the module doc), or None."""
        where = self.locate(lon, lat)
        if where.serving:
            chosen = where.serving[0]
        elif where.nearest is not None and where.nearest.distance_m <= max_distance_m:
            chosen = where.nearest
        else:
            return None
        outside: bool | None = None
        if home_region is not None and home_region in self.bounded:
            outside = home_region not in where.regions
        office = chosen.office
        words = [f"position {distance_text(chosen.distance_m)} from {office.name}"]
        if chosen.serves:
            words.append("inside its service area")
        else:
            words.append(
                f"the nearest office (within {distance_text(max_distance_m)}),"
                " outside every service area"
            )
        if outside is True:
            elsewhere = [r for r in where.regions if r != home_region]
            words.append(
                f"in region {elsewhere[0]}, outside the home region"
                if elsewhere
                else "outside the home region"
            )
        elif outside is False:
            words.append("inside the home region")
        return Route(
            office=office,
            distance_m=chosen.distance_m,
            within_service_area=chosen.serves,
            position_regions=where.regions,
            home_region=home_region,
            outside_home_region=outside,
            reason=", ".join(words),
        )


def office_from_row(
    office_id: int,
    name: str,
    region_id: str,
    lon: float,
    lat: float,
    service_area: Mapping[str, Any] | None,
    service_radius_m: float | None,
) -> Office:
    """An office as stored (its area as GeoJSON). Raises ValueError when it is not usable."""
    area = None if service_area is None else Area.from_geojson(service_area)
    return Office(office_id, name, region_id, lon, lat, area, service_radius_m)


__all__ = [
    "MAX_SERVICE_RADIUS_M",
    "Area",
    "Office",
    "OfficeDistance",
    "PlaceError",
    "Places",
    "RegionArea",
    "Route",
    "Whereabouts",
    "distance_text",
    "geodesic_m",
    "office_from_row",
    "position_problems",
    "radius_problems",
]
