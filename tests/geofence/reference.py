"""A slow, obviously correct classifier to hold the vectorized one to.

Per fix and per zone, with nothing shared with geofence's own geometry code:

* a polygon is densified along its edges (straight in longitude/latitude, joined the short way
  round, every 0.002 deg) and projected with pyproj into an azimuthal-equidistant projection
  centred **on the fix**, where the distance from the origin to any point is its geodesic distance
  from the fix; Shapely then gives the distance from the origin to the boundary and whether the
  origin is inside (parts that touch, such as the halves of a zone split at the antimeridian, are
  merged first);
* a circle is the geodesic distance to its centre (pyproj.Geod) minus its radius;
* a schedule boundary at wall time w happens at the first instant the subject's clock reads w or
  later, found with zoneinfo (both folds tried, gaps bisected);
* then the contract's rules, written out plainly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyproj
import shapely

from tagwatch.geofence import Schedule, Zone, ZoneKind
from tagwatch.geofence.schedule import parse_clock

GEOD = pyproj.Geod(ellps="WGS84")
KIND_ORDER = {ZoneKind.VICTIM: 0, ZoneKind.EXCLUSION: 1, ZoneKind.INCLUSION: 2, ZoneKind.CURFEW: 3}
STEP_DEG = 0.002


@dataclass(frozen=True)
class Row:
    fix_index: int
    zone_id: int
    kind: int
    state: int
    in_band: bool
    distance_m: float
    active: bool
    victim_stale: bool


@dataclass(frozen=True)
class Subject:
    timezone: str = "UTC"
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Victim:
    lon: float
    lat: float
    time: float
    acc: float
    max_age_s: float = 300.0


def _wrap(x: float) -> float:
    return (x + 180.0) % 360.0 - 180.0


def densify(ring: list[list[float]]) -> np.ndarray:
    points: list[tuple[float, float]] = []
    for (lon0, lat0, *_), (lon1, lat1, *_) in itertools.pairwise(ring):
        dlon = _wrap(lon1 - lon0)
        dlat = lat1 - lat0
        steps = max(1, math.ceil(max(abs(dlon), abs(dlat)) / STEP_DEG))
        for k in range(steps):
            t = k / steps
            points.append((_wrap(lon0 + t * dlon), lat0 + t * dlat))
    points.append(points[0])
    return np.asarray(points)


def polygon_signed_distance(geometry: dict[str, Any], lon: float, lat: float) -> float:
    proj = pyproj.Proj(proj="aeqd", lat_0=lat, lon_0=lon, ellps="WGS84")
    polygons = (
        [geometry["coordinates"]]
        if geometry["type"] == "Polygon"
        else list(geometry["coordinates"])
    )
    parts = []
    for rings in polygons:
        projected = []
        for ring in rings:
            dense = densify(ring)
            x, y = proj(dense[:, 0], dense[:, 1])
            projected.append(np.column_stack((x, y)))
        parts.append(shapely.Polygon(projected[0], projected[1:]))
    shape = shapely.union_all(shapely.set_precision(parts, 0.001))
    origin = shapely.Point(0.0, 0.0)
    distance = float(shapely.distance(origin, shape.boundary))
    return -distance if shapely.contains(shape, origin) else distance


def circle_signed_distance(
    centre: tuple[float, float], radius: float, lon: float, lat: float
) -> float:
    _, _, d = GEOD.inv(lon, lat, centre[0], centre[1])
    return float(d) - radius


# ------------------------------------------------------------------ schedules


def _wall_fields(wall: int) -> tuple[date, int, int, int]:
    day = date(1970, 1, 1) + timedelta(days=wall // 86_400)
    rest = wall % 86_400
    return day, rest // 3600, rest // 60 % 60, rest % 60


def _reads(zone: ZoneInfo, t: int) -> tuple[int, ...]:
    local = datetime.fromtimestamp(t, zone)
    return (local.year, local.month, local.day, local.hour, local.minute, local.second)


def resolve(wall: int, timezone: str) -> int:
    """The first instant at which the clock of ``timezone`` reads ``wall`` or later."""
    zone = ZoneInfo(timezone)
    day, hour, minute, second = _wall_fields(wall)
    wanted = (day.year, day.month, day.day, hour, minute, second)
    candidates = []
    for fold in (0, 1):
        instant = datetime(
            day.year, day.month, day.day, hour, minute, second, fold=fold, tzinfo=zone
        )
        t = int(instant.timestamp())
        candidates.append(t)
    genuine = [t for t in candidates if _reads(zone, t) == wanted]
    if genuine:
        return min(genuine)
    lo, hi = min(candidates), max(candidates)  # a gap: the clock jumps over the wall time
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _reads(zone, mid) >= wanted:
            hi = mid
        else:
            lo = mid
    return hi


def _wall_of(d: date, seconds: int) -> int:
    return (d - date(1970, 1, 1)).days * 86_400 + seconds


def schedule_active(schedule: Schedule | None, t: float, timezone: str) -> bool:
    if schedule is None:
        return True
    covering = []
    for exception in schedule.exceptions:
        a, b = exception.wall_start, exception.wall_end
        if resolve(a, timezone) <= t < resolve(b, timezone):
            covering.append((b - a, not exception.active, exception.active))
    if covering:
        return min(covering)[2]
    today = datetime.fromtimestamp(t, ZoneInfo(timezone)).date()
    for back in range(-1, 9):
        d = today - timedelta(days=back)
        for window in schedule.weekly:
            if d.weekday() not in window.days:
                continue
            start = parse_clock(window.start)
            end = parse_clock(window.end, allow_24=True)
            if end <= start:
                end += 86_400
            if resolve(_wall_of(d, start), timezone) <= t < resolve(_wall_of(d, end), timezone):
                return True
    return False


# ------------------------------------------------------------------ the classifier


def classify(
    zones: list[Zone],
    subjects: dict[int, Subject],
    fixes: list[tuple[int, float, float, float, float]],
    victims: dict[int, Victim] | None = None,
    reach_m: float = 0.0,
) -> list[Row]:
    """``fixes`` are (subject_id, lon, lat, acc, time)."""
    victims = victims or {}
    rows: list[Row] = []
    for i, (subject_id, lon, lat, acc, when) in enumerate(fixes):
        subject = subjects.get(subject_id)
        if subject is None:
            continue
        for zone in zones:
            own = zone.subject_id == subject_id
            shared = zone.subject_id is None and (
                zone.group is None or zone.group in subject.groups
            )
            if not (own or shared):
                continue
            stale = False
            pair_acc = acc
            if zone.kind is ZoneKind.VICTIM:
                victim = victims.get(zone.zone_id)
                if victim is None or abs(when - victim.time) > victim.max_age_s:
                    stale = True
                    distance = math.nan
                else:
                    assert zone.radius_m is not None
                    distance = circle_signed_distance(
                        (victim.lon, victim.lat), zone.radius_m, lon, lat
                    )
                    pair_acc = acc + victim.acc
            elif zone.geometry is not None and zone.geometry["type"] == "Point":
                assert zone.radius_m is not None
                centre = tuple(zone.geometry["coordinates"][:2])
                distance = circle_signed_distance(centre, zone.radius_m, lon, lat)  # type: ignore[arg-type]
            else:
                assert zone.geometry is not None
                distance = polygon_signed_distance(dict(zone.geometry), lon, lat)
            buffer = zone.buffer_m or 0.0
            if (
                shared
                and zone.kind is ZoneKind.EXCLUSION
                and not distance <= pair_acc + buffer + reach_m
            ):
                continue
            if stale:
                state, in_band = 2, False
            else:
                state = 1 if distance < -pair_acc else 0 if distance > pair_acc else 2
                in_band = state != 1 and distance + pair_acc < buffer
            timezone = subject.timezone
            rows.append(
                Row(
                    i,
                    zone.zone_id,
                    KIND_ORDER[zone.kind],
                    state,
                    in_band,
                    distance,
                    schedule_active(zone.schedule, when, timezone),
                    stale,
                )
            )
    rows.sort(key=lambda r: (r.fix_index, r.kind, r.zone_id))
    return rows
