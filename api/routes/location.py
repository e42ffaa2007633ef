"""Where a subject is and was, and where every subject of the caller's regions is now.

Every read here is written to the audit log in the transaction of the read. Every fix carries
`received_at` (when ingest stored it) and `late`: received more than `LATE_AFTER_S` after its own
time, as a tag uploads what it buffered out of coverage, or as someone backfills a track."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, Field

from tagwatch.alerts.thresholds import Thresholds
from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims, subject_in_scope
from tagwatch.api.schemas import Position
from tagwatch.api.security import CurrentUser, Role, allow

router = APIRouter(tags=["location"])
LOCATION_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
# A fix is late when it reached the platform this long after it was taken: the same threshold
# that marks alerts late (Thresholds.late_after_s).
LATE_AFTER_S = Thresholds().late_after_s


def is_late(ts: datetime, received_at: datetime) -> bool:
    return (received_at - ts).total_seconds() > LATE_AFTER_S


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


MAX_OVERVIEW_SUBJECTS = 5_000
# A position is stale when the device has missed about three of its reports (at least 2 min).
STALE_AFTER_INTERVALS = 3
STALE_AFTER_MIN_S = 120

# The latest fix of each subject in scope, from the offender devices the subject holds now: one
# backward probe of the fixes index (device_id, ts, seq) per held device, not a scan.
OVERVIEW = f"""
SELECT s.id, s.name, s.region_id, p.device_id, p.ts, p.lat, p.lon, p.acc, p.src, p.batt,
       EXTRACT(EPOCH FROM now() - p.ts)::float8 AS age_s, p.expected_interval_s
FROM subjects s
JOIN LATERAL (
    SELECT f.device_id, f.ts, f.lat, f.lon, f.acc, f.src, f.batt, d.expected_interval_s
    FROM device_assignments a
    JOIN devices d ON d.id = a.device_id
    JOIN LATERAL (
        SELECT x.device_id, x.ts, x.lat, x.lon, x.acc, x.src, x.batt
        FROM fixes x
        WHERE x.device_id = a.device_id AND x.ts >= lower(a.during)
          AND (upper_inf(a.during) OR x.ts < upper(a.during))
        ORDER BY x.ts DESC, x.seq DESC
        LIMIT 1
    ) f ON true
    WHERE a.subject_id = s.id AND a.role = 'offender' AND a.during @> now()
    ORDER BY f.ts DESC
    LIMIT 1
) p ON true
WHERE (%(regions)s::text[] IS NULL OR s.region_id = ANY(%(regions)s::text[]))
  AND (%(region)s::text IS NULL OR s.region_id = %(region)s::text)
  AND (%(victims)s OR NOT s.victim)
ORDER BY s.id
LIMIT {MAX_OVERVIEW_SUBJECTS + 1}
"""


class SubjectPosition(BaseModel):
    subject_id: int
    name: str
    region_id: str
    device_id: str
    ts: datetime
    lon: float
    lat: float
    acc: float | None
    src: str
    batt: float | None
    age_s: float = Field(description="seconds since the fix was taken, at the time of the read")
    expected_interval_s: int = Field(description="how often the device is meant to report")
    stale: bool = Field(
        description="the device has missed about three reports: older than "
        "max(3 x expected_interval_s, 120 s)"
    )


class PositionsOverview(BaseModel):
    generated_at: datetime
    count: int
    truncated: bool = Field(
        description=f"more than {MAX_OVERVIEW_SUBJECTS} subjects had a position: the first "
        f"{MAX_OVERVIEW_SUBJECTS} by id are listed; narrow with region="
    )
    items: list[SubjectPosition]


@router.get(
    "/positions",
    response_model=PositionsOverview,
    dependencies=[allow(*LOCATION_ROLES)],
)
async def positions(
    conn: Conn,
    user: CurrentUser,
    region: str | None = Query(
        default=None, max_length=64, description="only this region (within the caller's)"
    ),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> PositionsOverview:
    """The latest fix of every subject in the caller's regions that holds a device as offender
    now (fixes from the current holding period only), for a live map. Subjects without a fix,
    and victims unless the caller is a supervisor or admin, are left out; at most 5,000
    subjects (by id), `truncated` says when there were more.

    One audit row for the whole overview (action `positions_overview`, with the subject ids
    listed and the reason if given)."""
    rows = await (
        await conn.execute(
            OVERVIEW,
            {"regions": user.region_filter(), "region": region, "victims": may_read_victims(user)},
        )
    ).fetchall()
    truncated = len(rows) > MAX_OVERVIEW_SUBJECTS
    rows = rows[:MAX_OVERVIEW_SUBJECTS]
    items = [
        SubjectPosition(
            subject_id=r[0],
            name=r[1],
            region_id=r[2],
            device_id=r[3],
            ts=r[4],
            lat=r[5],
            lon=r[6],
            acc=r[7],
            src=r[8],
            batt=r[9],
            age_s=max(0.0, r[10]),
            expected_interval_s=r[11],
            stale=r[10] > max(STALE_AFTER_INTERVALS * r[11], STALE_AFTER_MIN_S),
        )
        for r in rows
    ]
    await audit.record(
        conn,
        user,
        "positions_overview",
        None,
        region=region,
        reason=reason,
        count=len(items),
        subject_ids=[item.subject_id for item in items],
    )
    return PositionsOverview(
        generated_at=datetime.now(UTC), count=len(items), truncated=truncated, items=items
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
        late=is_late(row[1], row[10]),
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


# The fixes of the range (the first `limit`), thinned evenly by time when there are more than
# max_points: the span first..last is cut into max_points - 1 equal steps, and for each instant
# first + i * step the first fix at or after it is kept (so the first and the last fix always
# are, and a gap never yields two points for one instant). Numeric epochs: exact to the
# microsecond, so the last fix falls in the last bucket.
THINNED = f"""
WITH sel AS (
    SELECT {FIX_COLUMNS} {HELD_FIXES} AND f.ts >= %(start)s AND f.ts < %(end)s
    ORDER BY f.ts, f.seq LIMIT %(limit)s
), span AS (
    SELECT min(ts) AS t0, max(ts) AS t1, count(*) AS n FROM sel
), numbered AS (
    SELECT sel.*, span.n,
           CASE WHEN span.n <= %(max_points)s
                THEN row_number() OVER (ORDER BY sel.ts, sel.seq)
                WHEN span.t1 = span.t0 THEN 0
                ELSE floor(EXTRACT(EPOCH FROM sel.ts - span.t0) * (%(max_points)s - 1)
                           / EXTRACT(EPOCH FROM span.t1 - span.t0))::bigint
           END AS bucket
    FROM sel CROSS JOIN span
)
SELECT DISTINCT ON (bucket) device_id, ts, lat, lon, acc, spd, hdg, batt, src, seq,
       received_at, n
FROM numbered ORDER BY bucket, ts, seq
"""

TRACK_DESCRIPTION = """A GeoJSON FeatureCollection (lon, lat): the track as a LineString, then
each fix (in time order), for the fixes the subject's offender devices reported while held, in
[from, to) (default: the last 24 hours), at most the first `limit`.

Each fix says when it was stored (`received_at`) and whether it was **late**: received more
than 300 s (the alert engine's `late_after_s`) after its own time, as a tag uploads what it
buffered out of coverage. `properties.late_fixes` counts them.

**Downsampling** for long ranges: with `max_points=N` (2 to 10,000) at most N points are
returned, thinned evenly by time: the span from the first to the last fix of the selection is
cut into N - 1 equal steps and, for each step's start, the first fix at or after it is kept.
The first and the last fix are always kept; a gap in reporting yields fewer points, never
invented ones. `properties.fixes` is the number of points returned, `properties.fixes_in_range`
the number they were thinned from, `properties.downsampled` whether any were dropped. Without
`max_points` every selected fix is returned (the default).

The read is audited (action `track`, with the range and the reason)."""


@router.get(
    "/subjects/{subject_id}/track",
    dependencies=[allow(*LOCATION_ROLES)],
    description=TRACK_DESCRIPTION,
)
async def track(
    subject_id: int,
    conn: Conn,
    user: CurrentUser,
    from_: AwareDatetime | None = Query(default=None, alias="from"),
    to: AwareDatetime | None = None,
    limit: int = Query(default=10_000, ge=1, le=100_000),
    max_points: int | None = Query(
        default=None,
        ge=2,
        le=10_000,
        description="downsample: at most this many points, evenly thinned by time, "
        "keeping the first and the last fix",
    ),
    reason: str | None = Query(default=None, max_length=500),
) -> dict[str, Any]:
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(hours=24)
    if start >= end:
        raise HTTPException(422, detail="'from' must be before 'to'")
    await subject_in_scope(conn, user, subject_id)
    await audit.record(
        conn,
        user,
        "track",
        subject_id,
        start=start.isoformat(),
        end=end.isoformat(),
        reason=reason,
        **({"max_points": max_points} if max_points is not None else {}),
    )
    params = {"subject": subject_id, "start": start, "end": end, "limit": limit}
    if max_points is None:
        rows = await (
            await conn.execute(
                f"SELECT {FIX_COLUMNS} {HELD_FIXES} AND f.ts >= %(start)s AND f.ts < %(end)s "
                "ORDER BY f.ts LIMIT %(limit)s",
                params,
            )
        ).fetchall()
        selected = len(rows)
    else:
        rows = await (await conn.execute(THINNED, {**params, "max_points": max_points})).fetchall()
        selected = int(rows[0][11]) if rows else 0
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
                "received_at": r[10].isoformat(),
                "late": is_late(r[1], r[10]),
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
    properties: dict[str, Any] = {
        "subject_id": subject_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "fixes": len(rows),
        "late_fixes": sum(1 for r in rows if is_late(r[1], r[10])),
        "truncated": selected == limit,
    }
    if max_points is not None:
        properties["fixes_in_range"] = selected
        properties["max_points"] = max_points
        properties["downsampled"] = len(rows) < selected
    return {"type": "FeatureCollection", "features": features, "properties": properties}
