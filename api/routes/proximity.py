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
from tagwatch.store.fixes import EARTH_RADIUS_M, near

router = APIRouter(tags=["location"])
PROXIMITY_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
MAX_WINDOW = timedelta(days=31)
MAX_RADIUS_M = 50_000.0


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
    rows = await near(
        conn,
        lat=lat,
        lon=lon,
        radius_m=radius_m,
        start=from_,
        end=to,
        regions=user.region_filter(),
        victims=may_read_victims(user),
        late_after_s=LATE_AFTER_S,
        box=bounding_box(lat, lon, radius_m),
    )
    found = sorted(rows, key=lambda r: (r["distance_m"], r["subject_id"]))
    subjects = [
        {
            "subject_id": r["subject_id"],
            "name": r["name"],
            "case_ref": r["case_ref"],
            "region_id": r["region_id"],
            "fixes_within": r["fixes_within"],
            "late_fixes_within": r["late_within"],
            "closest": {
                "device_id": r["device_id"],
                "ts": r["ts"],
                "lat": r["lat"],
                "lon": r["lon"],
                "acc": r["acc"],
                "distance_m": round(r["distance_m"], 2),
                "received_at": r["received_at"],
                "late": is_late(r["ts"], r["received_at"]),
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
