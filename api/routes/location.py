"""Where a subject is and was. Every read here is written to the audit log first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AwareDatetime

from api import audit
from api.deps import Conn, subject_in_scope
from api.schemas import Position
from api.security import CurrentUser, Role, allow

router = APIRouter(tags=["location"])
LOCATION_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")

# Fixes of the devices the subject held as offender, each inside its holding period.
HELD_FIXES = """
    FROM device_assignments a
    JOIN fixes f ON f.device_id = a.device_id
     AND f.ts >= lower(a.during) AND (upper_inf(a.during) OR f.ts < upper(a.during))
    WHERE a.subject_id = %(subject)s AND a.role = 'offender'
"""
FIX_COLUMNS = (
    "f.device_id, f.ts, f.lat, f.lon, f.acc, f.spd, f.hdg, f.batt, f.src, f.seq, f.received_at"
)


def _position(subject_id: int, row: tuple[Any, ...]) -> Position:
    return Position(
        subject_id=subject_id,
        device_id=row[0],
        ts=row[1],
        lat=row[2],
        lon=row[3],
        acc=row[4],
        spd=row[5],
        hdg=row[6],
        batt=row[7],
        src=row[8],
        seq=None if row[9] < 0 else row[9],
        received_at=row[10],
    )


@router.get(
    "/subjects/{subject_id}/position",
    response_model=Position,
    dependencies=[allow(*LOCATION_ROLES)],
)
async def position(
    subject_id: int,
    conn: Conn,
    user: CurrentUser,
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> Position:
    await subject_in_scope(conn, user, subject_id)
    await audit.record(conn, user, "position", subject_id, reason=reason)
    row = await (
        await conn.execute(
            f"SELECT {FIX_COLUMNS} {HELD_FIXES} ORDER BY f.ts DESC LIMIT 1",
            {"subject": subject_id},
        )
    ).fetchone()
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no position known for subject {subject_id}"
        )
    return _position(subject_id, row)


@router.get("/subjects/{subject_id}/track", dependencies=[allow(*LOCATION_ROLES)])
async def track(
    subject_id: int,
    conn: Conn,
    user: CurrentUser,
    from_: AwareDatetime | None = Query(default=None, alias="from"),
    to: AwareDatetime | None = None,
    limit: int = Query(default=10_000, ge=1, le=100_000),
    reason: str | None = Query(default=None, max_length=500),
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (lon, lat): the track as a LineString, then each fix."""
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(hours=24)
    if start >= end:
        raise HTTPException(422, detail="'from' must be before 'to'")
    await subject_in_scope(conn, user, subject_id)
    await audit.record(
        conn, user, "track", subject_id, start=start.isoformat(), end=end.isoformat(), reason=reason
    )
    rows = await (
        await conn.execute(
            f"SELECT {FIX_COLUMNS} {HELD_FIXES} AND f.ts >= %(start)s AND f.ts < %(end)s "
            "ORDER BY f.ts LIMIT %(limit)s",
            {"subject": subject_id, "start": start, "end": end, "limit": limit},
        )
    ).fetchall()
    points = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r[3], r[2]]},
            "properties": {
                "device_id": r[0],
                "ts": r[1].isoformat(),
                "acc": r[4],
                "spd": r[5],
                "hdg": r[6],
                "batt": r[7],
                "src": r[8],
                "seq": None if r[9] < 0 else r[9],
            },
        }
        for r in rows
    ]
    features: list[dict[str, Any]] = []
    if len(rows) >= 2:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[r[3], r[2]] for r in rows]},
                "properties": {"kind": "track", "subject_id": subject_id},
            }
        )
    features.extend(points)
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "subject_id": subject_id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "fixes": len(rows),
            "truncated": len(rows) == limit,
        },
    }
