"""Crime-scene correlation: which subjects were within a radius of a point in a time window.

Only subjects in the caller's regions (their current region, as everywhere in the API) are
searched, in SQL. Fixes count while the subject held the device as offender: a victim's phone
is never a suspect's fix, and a victim subject (store/migrations/0013_victim_data.sql) is
searched for supervisors and admins only. The search is a bounding box on lat/lon (the
spherical cap's exact extent, split in two across the antimeridian, unbounded in longitude when
the cap holds a pole), then the haversine distance on a sphere of the Earth's mean radius,
metres on the ground (within 0.5 % of the WGS84 geodesic).

A location read: one audit row for the search (who, role, area, window, reason, the subjects
found) and one per subject found, so a subject's audit trail shows it.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.routes.location import LATE_AFTER_S, is_late
from tagwatch.api.security import CurrentUser, Role, allow

router = APIRouter(tags=["location"])
PROXIMITY_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
EARTH_RADIUS_M = 6_371_008.8
MAX_WINDOW = timedelta(days=31)
MAX_RADIUS_M = 50_000.0

SEARCH = f"""
WITH candidates AS (
    SELECT s.id AS subject_id, s.name, s.case_ref, s.region_id,
           f.device_id, f.ts, f.lat, f.lon, f.acc, f.received_at,
           2 * {EARTH_RADIUS_M} * asin(least(1.0, sqrt(
               power(sin(radians(f.lat - %(lat)s) / 2), 2)
             + cos(radians(%(lat)s)) * cos(radians(f.lat))
               * power(sin(radians(f.lon - %(lon)s) / 2), 2)))) AS distance_m
    FROM subjects s
    JOIN device_assignments a ON a.subject_id = s.id AND a.role = 'offender'
     AND a.during && tstzrange(%(start)s, %(end)s)
    JOIN fixes f ON f.device_id = a.device_id
     AND f.ts >= greatest(lower(a.during), %(start)s)
     AND f.ts < least(upper(a.during), %(end)s)
    WHERE (%(regions)s::text[] IS NULL OR s.region_id = ANY(%(regions)s::text[]))
      AND (%(victims)s OR NOT s.victim)
      AND f.lat BETWEEN %(lat_min)s AND %(lat_max)s
      AND (%(lon_any)s OR f.lon BETWEEN %(lon_min)s AND %(lon_max)s
           OR f.lon BETWEEN %(lon_min2)s AND %(lon_max2)s)
), within AS (
    SELECT *, count(*) OVER (PARTITION BY subject_id) AS fixes_within,
           count(*) FILTER (WHERE received_at - ts > make_interval(secs => %(late_after)s))
               OVER (PARTITION BY subject_id) AS late_within
    FROM candidates WHERE distance_m <= %(radius)s
)
SELECT DISTINCT ON (subject_id) subject_id, name, case_ref, region_id, device_id, ts, lat, lon,
       acc, distance_m, fixes_within, received_at, late_within
FROM within ORDER BY subject_id, distance_m, ts
"""


def bounding_box(lat: float, lon: float, radius_m: float) -> dict[str, Any]:
    """The lat/lon box around a spherical cap (a little wider, for rounding)."""
    angle = radius_m / EARTH_RADIUS_M
    dlat = math.degrees(angle) + 1e-9
    lat_min, lat_max = lat - dlat, lat + dlat
    box: dict[str, Any] = {
        "lat_min": max(-90.0, lat_min),
        "lat_max": min(90.0, lat_max),
        "lon_any": False,
        "lon_min": lon,
        "lon_max": lon,
        "lon_min2": 1.0,  # an empty second range unless the box crosses the antimeridian
        "lon_max2": 0.0,
    }
    if lat_min <= -90.0 or lat_max >= 90.0:
        box["lon_any"] = True
        return box
    dlon = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(lat))))) + 1e-9
    low, high = lon - dlon, lon + dlon
    box["lon_min"], box["lon_max"] = max(-180.0, low), min(180.0, high)
    if low < -180.0:
        box["lon_min2"], box["lon_max2"] = low + 360.0, 180.0
    elif high > 180.0:
        box["lon_min2"], box["lon_max2"] = -180.0, high - 360.0
    return box


def _refuse(reason: str, message: str) -> HTTPException:
    return HTTPException(422, detail={"reason": reason, "message": message})


@router.get("/proximity", dependencies=[allow(*PROXIMITY_ROLES)])
async def proximity(
    conn: Conn,
    user: CurrentUser,
    lat: float = Query(ge=-90, le=90, description="WGS84 degrees"),
    lon: float = Query(ge=-180, le=180, description="WGS84 degrees"),
    radius_m: float = Query(description="metres on the ground, 1 to 50000"),
    from_: AwareDatetime = Query(alias="from", description="window start (inclusive)"),
    to: AwareDatetime = Query(description="window end (exclusive); at most 31 days after from"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> dict[str, Any]:
    """Subjects with fixes within ``radius_m`` of (lat, lon) in [from, to), nearest first, each
    with its closest fix (the earliest of equally close ones) and how many fixes were within.

    Late fixes count like any other but are shown as such: the closest fix has `received_at`
    and `late` (received more than 300 s after its time), and `late_fixes_within` says how many
    of the fixes within were late, so an answer built on a tag's buffered upload is visible."""
    if not math.isfinite(radius_m) or not 1 <= radius_m <= MAX_RADIUS_M:
        raise _refuse("radius_out_of_range", "radius_m must be between 1 and 50000 metres")
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise _refuse("invalid_position", "lat and lon must be finite numbers")
    if from_ >= to:
        raise _refuse("empty_window", "'from' must be before 'to'")
    if to - from_ > MAX_WINDOW:
        raise _refuse("window_too_long", "the window may span at most 31 days")
    rows = await (
        await conn.execute(
            SEARCH,
            {
                "lat": lat,
                "lon": lon,
                "radius": radius_m,
                "start": from_,
                "end": to,
                "regions": user.region_filter(),
                "late_after": LATE_AFTER_S,
                "victims": may_read_victims(user),
                **bounding_box(lat, lon, radius_m),
            },
        )
    ).fetchall()
    found = sorted(rows, key=lambda r: (r[9], r[0]))
    subjects = [
        {
            "subject_id": r[0],
            "name": r[1],
            "case_ref": r[2],
            "region_id": r[3],
            "fixes_within": r[10],
            "late_fixes_within": r[12],
            "closest": {
                "device_id": r[4],
                "ts": r[5],
                "lat": r[6],
                "lon": r[7],
                "acc": r[8],
                "distance_m": round(r[9], 2),
                "received_at": r[11],
                "late": is_late(r[5], r[11]),
            },
        }
        for r in found
    ]
    area = {
        "lat": lat,
        "lon": lon,
        "radius_m": radius_m,
        "start": from_.isoformat(),
        "end": to.isoformat(),
    }
    ids = [s["subject_id"] for s in subjects]
    await audit.record(conn, user, "proximity", None, **area, reason=reason, subject_ids=ids)
    for subject_id in ids:
        await audit.record(conn, user, "proximity", subject_id, **area, reason=reason)
    return {
        "query": {"lat": lat, "lon": lon, "radius_m": radius_m, "from": from_, "to": to},
        "subjects": subjects,
    }
