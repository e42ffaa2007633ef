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
from tagwatch.store import fixes

router = APIRouter(tags=["location"])
LOCATION_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
# A fix is late when it reached the platform this long after it was taken: the same threshold
# that marks alerts late (Thresholds.late_after_s).
LATE_AFTER_S = Thresholds().late_after_s


def is_late(ts: datetime, received_at: datetime) -> bool:
    return (received_at - ts).total_seconds() > LATE_AFTER_S


MAX_OVERVIEW_SUBJECTS = 5_000
# A position is stale when the device has missed about three of its reports (at least 2 min).
STALE_AFTER_INTERVALS = 3
STALE_AFTER_MIN_S = 120


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
    rows = await fixes.overview(
        conn, user.region_filter(), region, may_read_victims(user), MAX_OVERVIEW_SUBJECTS + 1
    )
    truncated = len(rows) > MAX_OVERVIEW_SUBJECTS
    rows = rows[:MAX_OVERVIEW_SUBJECTS]
    items = [
        SubjectPosition(
            subject_id=r["id"],
            name=r["name"],
            region_id=r["region_id"],
            device_id=r["device_id"],
            ts=r["ts"],
            lat=r["lat"],
            lon=r["lon"],
            acc=r["acc"],
            src=r["src"],
            batt=r["batt"],
            age_s=max(0.0, r["age_s"]),
            expected_interval_s=r["expected_interval_s"],
            stale=r["age_s"]
            > max(STALE_AFTER_INTERVALS * r["expected_interval_s"], STALE_AFTER_MIN_S),
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


def _position(subject_id: int, row: dict[str, Any]) -> Position:
    return Position(
        subject_id=subject_id,
        device_id=row["device_id"],
        ts=row["ts"],
        lat=row["lat"],
        lon=row["lon"],
        acc=row["acc"],
        spd=row["spd"],
        hdg=row["hdg"],
        batt=row["batt"],
        src=row["src"],
        seq=None if row["seq"] < 0 else row["seq"],
        received_at=row["received_at"],
        late=is_late(row["ts"], row["received_at"]),
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
    row = await fixes.latest_fix(conn, subject_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no position known for subject {subject_id}"
        )
    return _position(subject_id, row)


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
    if max_points is None:
        rows = await fixes.track(conn, subject_id, start, end, limit)
        selected = len(rows)
    else:
        rows = await fixes.thinned_track(conn, subject_id, start, end, limit, max_points)
        selected = int(rows[0]["n"]) if rows else 0
    points = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {
                "device_id": r["device_id"],
                "ts": r["ts"].isoformat(),
                "acc": r["acc"],
                "spd": r["spd"],
                "hdg": r["hdg"],
                "batt": r["batt"],
                "src": r["src"],
                "seq": None if r["seq"] < 0 else r["seq"],
                "received_at": r["received_at"].isoformat(),
                "late": is_late(r["ts"], r["received_at"]),
            },
        }
        for r in rows
    ]
    features: list[dict[str, Any]] = []
    if len(rows) >= 2:
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[r["lon"], r["lat"]] for r in rows],
                },
                "properties": {"kind": "track", "subject_id": subject_id},
            }
        )
    features.extend(points)
    properties: dict[str, Any] = {
        "subject_id": subject_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "fixes": len(rows),
        "late_fixes": sum(1 for r in rows if is_late(r["ts"], r["received_at"])),
        "truncated": selected == limit,
    }
    if max_points is not None:
        properties["fixes_in_range"] = selected
        properties["max_points"] = max_points
        properties["downsampled"] = len(rows) < selected
    return {"type": "FeatureCollection", "features": features, "properties": properties}
