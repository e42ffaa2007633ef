"""Zones: GeoJSON (lon, lat) in, validated by the geofence core, region-scoped in SQL.

Who sees what: a subject's zone is in its subject's (current) region; a global zone (no subject:
for everyone, or for a group) is in its ``region_id``, and one without a region is visible to
everyone, since it applies to every subject. A zone outside the caller's regions answers 404,
exactly like one that does not exist.

Who writes: supervisors and admins. Global zones are written only by users with every region
(``*``): the alert engine applies a global zone to every subject whatever its ``region_id``
(the geofence index knows no regions), so a supervisor of one region could otherwise put zones
on the subjects of another.

Victims' data (store/migrations/0013_victim_data.sql): a zone that protects a victim (a victim
zone, or an exclusion zone with ``protects_subject_id``) is shown whole to supervisors and
admins only, and every time it is (a read, a list, a write's answer) one ``victim_zone`` audit
row per victim names the zones shown. Operators and tracers see it redacted (``ZonePublic``):
that it exists, its kind, owner and region, so that its alerts make sense, not where it is.

Deleting is soft (``deleted_at``): alerts keep their zone reference. Every insert takes a new
``revision`` (column default) and every update, the soft delete included, a newer one (trigger
``zones_touch``), which is how running alert engines pick the change up.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from tagwatch.alerts.thresholds import DEFAULTS, ThresholdError
from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.schemas_zones import ZoneCreate, ZoneKindName, ZonePatch, ZonePublic
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.geofence import Zone, ZoneValidationError
from tagwatch.geofence.zones import validate_zone

router = APIRouter(prefix="/zones", tags=["zones"])
READ_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
WRITE_ROLES: tuple[Role, ...] = ("admin", "supervisor")

COLUMNS = (
    "z.id, z.name, z.kind, z.geometry, z.radius_m, z.buffer_m, z.subject_id, z.group_name,"
    " COALESCE(s.region_id, z.region_id), z.victim_subject_id, z.schedule, z.thresholds,"
    " z.created_at, z.updated_at, z.revision, z.protects_subject_id"
)
# The region a zone is in, for scoping: its subject's, or its own for a global zone.
ZONE_REGION = "(CASE WHEN z.subject_id IS NULL THEN z.region_id ELSE s.region_id END)"
SCOPED = (
    " FROM zones z LEFT JOIN subjects s ON s.id = z.subject_id"
    " WHERE z.deleted_at IS NULL AND (%(regions)s::text[] IS NULL"
    f" OR {ZONE_REGION} = ANY(%(regions)s::text[])"
    " OR (z.subject_id IS NULL AND z.region_id IS NULL))"
)
FIELDS = (
    "name",
    "kind",
    "geometry",
    "radius_m",
    "buffer_m",
    "subject_id",
    "group_name",
    "region_id",
    "victim_subject_id",
    "protects_subject_id",
    "schedule",
    "thresholds",
)
# What a zone protecting a victim shows to a caller who may not read victims' data.
REDACTED: dict[str, Any] = {
    "name": "",
    "geometry": None,
    "radius_m": None,
    "buffer_m": None,
    "schedule": None,
    "victim_subject_id": None,
    "protects_subject_id": None,
    "redacted": True,
}


def _zone(row: tuple[Any, ...]) -> ZonePublic:
    return ZonePublic(
        id=row[0],
        name=row[1],
        kind=row[2],
        geometry=row[3],
        radius_m=row[4],
        buffer_m=row[5],
        subject_id=row[6],
        group_name=row[7],
        region_id=row[8],
        victim_subject_id=row[9],
        schedule=row[10],
        thresholds=row[11] or {},
        created_at=row[12],
        updated_at=row[13],
        revision=row[14],
        protects_subject_id=row[15],
        protects_victim=row[9] is not None or row[15] is not None,
    )


def _victim_of(zone: ZonePublic) -> int | None:
    if zone.victim_subject_id is not None:
        return zone.victim_subject_id
    return zone.protects_subject_id


async def _shown(
    conn: AsyncConnection, user: User, rows: list[tuple[Any, ...]], action: str
) -> list[ZonePublic]:
    """The zones as ``user`` may see them: victims' zones redacted for operators and tracers,
    whole (and audited) for supervisors and admins."""
    zones = [_zone(r) for r in rows]
    if not may_read_victims(user):
        return [z.model_copy(update=REDACTED) if z.protects_victim else z for z in zones]
    shown = [(victim, z.id) for z in zones if (victim := _victim_of(z)) is not None]
    await audit.record_victim_zones(conn, user, shown, via=action)
    return zones


def _invalid(reasons: list[str]) -> HTTPException:
    return HTTPException(
        422,
        detail={"reason": "invalid_zone", "message": "; ".join(reasons), "reasons": reasons},
    )


def _refer(reason: str, message: str) -> HTTPException:
    return HTTPException(422, detail={"reason": reason, "message": message})


def _geometry_reasons(body: ZoneCreate) -> list[str]:
    """Everything the geofence core and the threshold rules say about the zone as drawn."""
    reasons: list[str] = []
    if body.kind == "victim" and body.victim_subject_id is None:
        reasons.append("a victim zone needs victim_subject_id (the victim whose phone it follows)")
    if body.kind != "victim" and body.victim_subject_id is not None:
        reasons.append("victim_subject_id belongs to victim zones only")
    if body.kind != "exclusion" and body.protects_subject_id is not None:
        reasons.append(
            "protects_subject_id belongs to exclusion zones only "
            "(a victim zone names its victim in victim_subject_id)"
        )
    if body.subject_id is not None and body.subject_id in (
        body.victim_subject_id,
        body.protects_subject_id,
    ):
        reasons.append("a zone cannot protect its own subject from them")
    if body.subject_id is not None and body.group_name is not None:
        reasons.append("a zone belongs to one subject or to a group, not both")
    for name in ("radius_m", "buffer_m"):
        value = getattr(body, name)
        if value is not None and not math.isfinite(value):
            reasons.append(f"{name} must be a finite number of metres")
    if reasons:
        return reasons
    try:
        zone = Zone.from_json(
            {
                "zone_id": 0,
                "kind": body.kind,
                "geometry": body.geometry,
                "radius_m": body.radius_m,
                "buffer_m": body.buffer_m,
                "subject_id": body.subject_id,
                "group": body.group_name,
                "schedule": body.schedule,
            }
        )
        validate_zone(zone)
    except ZoneValidationError as exc:
        reasons.extend(exc.reasons)
    except Exception as exc:  # malformed input must be a 422, never a 500
        reasons.append(f"malformed zone: {exc!r}")
    try:
        DEFAULTS.with_overrides(body.thresholds)
    except ThresholdError as exc:
        reasons.append(f"thresholds: {exc}")
    return reasons


async def _subject_region(conn: AsyncConnection, user: User, subject_id: int) -> str | None:
    """The subject's region when the caller may see the subject, else None."""
    row = await (
        await conn.execute(
            "SELECT region_id FROM subjects WHERE id = %s"
            " AND (%s::text[] IS NULL OR region_id = ANY(%s::text[]))",
            (subject_id, user.region_filter(), user.region_filter()),
        )
    ).fetchone()
    return None if row is None else str(row[0])


async def _checked(conn: AsyncConnection, user: User, body: ZoneCreate) -> ZoneCreate:
    """Validate a zone and its references for ``user``; return it as it is to be stored."""
    reasons = _geometry_reasons(body)
    if reasons:
        raise _invalid(reasons)
    if body.subject_id is not None:
        region = await _subject_region(conn, user, body.subject_id)
        if region is None:
            raise _refer("unknown_subject", f"subject {body.subject_id} not found")
        if body.region_id is not None and body.region_id != region:
            raise _invalid(
                [
                    f"region_id {body.region_id!r} is not subject {body.subject_id}'s region: "
                    "a subject's zone is always in its subject's region"
                ]
            )
        body = body.model_copy(update={"region_id": None})
    elif not user.all_regions:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="a global zone applies to subjects of every region; "
            "only a user with every region may write one",
        )
    for victim in (body.victim_subject_id, body.protects_subject_id):
        if victim is not None and await _subject_region(conn, user, victim) is None:
            raise _refer("unknown_victim", f"victim subject {victim} not found")
    return body


def _values(body: ZoneCreate) -> dict[str, Any]:
    return {
        "name": body.name,
        "kind": body.kind,
        "geometry": None if body.geometry is None else Jsonb(body.geometry),
        "radius_m": body.radius_m,
        "buffer_m": body.buffer_m,
        "subject_id": body.subject_id,
        "group_name": body.group_name,
        "region_id": body.region_id,
        "victim_subject_id": body.victim_subject_id,
        "protects_subject_id": body.protects_subject_id,
        "schedule": None if body.schedule is None else Jsonb(body.schedule),
        "thresholds": Jsonb(body.thresholds),
    }


async def _read(
    conn: AsyncConnection, user: User, zone_id: int, *, lock: bool = False
) -> tuple[Any, ...]:
    row = await (
        await conn.execute(
            f"SELECT {COLUMNS} {SCOPED} AND z.id = %(id)s" + (" FOR UPDATE OF z" if lock else ""),
            {"regions": user.region_filter(), "id": zone_id},
        )
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"zone {zone_id} not found")
    return tuple(row)


def _writable(user: User, subject_id: int | None) -> None:
    if subject_id is None and not user.all_regions:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="a global zone applies to subjects of every region; "
            "only a user with every region may change it",
        )


async def _store(
    conn: AsyncConnection, user: User, body: ZoneCreate, zone_id: int | None
) -> ZonePublic:
    values = _values(body)
    try:
        if zone_id is None:
            row = await (
                await conn.execute(
                    f"INSERT INTO zones ({', '.join(FIELDS)})"
                    f" VALUES ({', '.join(f'%({f})s' for f in FIELDS)}) RETURNING id",
                    values,
                )
            ).fetchone()
            assert row is not None
            zone_id = int(row[0])
        else:
            await conn.execute(
                f"UPDATE zones SET {', '.join(f'{f} = %({f})s' for f in FIELDS)} WHERE id = %(id)s",
                {**values, "id": zone_id},
            )
    except ForeignKeyViolation as exc:
        raise _refer(
            "unknown_reference", f"unknown region or subject: {exc.diag.message_detail}"
        ) from exc
    return (await _shown(conn, user, [await _read(conn, user, zone_id)], "write"))[0]


@router.get("", response_model=list[ZonePublic], dependencies=[allow(*READ_ROLES)])
async def list_zones(
    conn: Conn,
    user: CurrentUser,
    subject_id: int | None = Query(default=None, description="zones owned by this subject"),
    kind: ZoneKindName | None = None,
    region: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[ZonePublic]:
    rows = await (
        await conn.execute(
            f"SELECT {COLUMNS} {SCOPED} AND z.id > %(after)s"
            " AND (%(subject)s::bigint IS NULL OR z.subject_id = %(subject)s)"
            " AND (%(kind)s::text IS NULL OR z.kind = %(kind)s)"
            f" AND (%(region)s::text IS NULL OR {ZONE_REGION} = %(region)s)"
            " ORDER BY z.id LIMIT %(limit)s",
            {
                "regions": user.region_filter(),
                "after": after_id,
                "subject": subject_id,
                "kind": kind,
                "region": region,
                "limit": limit,
            },
        )
    ).fetchall()
    return await _shown(conn, user, [tuple(r) for r in rows], "list")


@router.get("/{zone_id}", response_model=ZonePublic, dependencies=[allow(*READ_ROLES)])
async def read_zone(zone_id: int, conn: Conn, user: CurrentUser) -> ZonePublic:
    return (await _shown(conn, user, [await _read(conn, user, zone_id)], "read"))[0]


@router.post("", response_model=ZonePublic, status_code=201, dependencies=[allow(*WRITE_ROLES)])
async def create_zone(body: ZoneCreate, conn: Conn, user: CurrentUser) -> ZonePublic:
    return await _store(conn, user, await _checked(conn, user, body), None)


@router.put("/{zone_id}", response_model=ZonePublic, dependencies=[allow(*WRITE_ROLES)])
async def replace_zone(zone_id: int, body: ZoneCreate, conn: Conn, user: CurrentUser) -> ZonePublic:
    _writable(user, (await _read(conn, user, zone_id, lock=True))[6])
    return await _store(conn, user, await _checked(conn, user, body), zone_id)


@router.patch("/{zone_id}", response_model=ZonePublic, dependencies=[allow(*WRITE_ROLES)])
async def update_zone(zone_id: int, body: ZonePatch, conn: Conn, user: CurrentUser) -> ZonePublic:
    current = _zone(await _read(conn, user, zone_id, lock=True))
    _writable(user, current.subject_id)
    merged = current.model_dump(include=set(FIELDS))
    if current.subject_id is not None:
        merged["region_id"] = None  # shown as the subject's; stored only on global zones
    merged.update(body.model_dump(exclude_unset=True))
    try:
        full = ZoneCreate.model_validate(merged)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    return await _store(conn, user, await _checked(conn, user, full), zone_id)


@router.delete("/{zone_id}", status_code=204, dependencies=[allow(*WRITE_ROLES)])
async def delete_zone(zone_id: int, conn: Conn, user: CurrentUser) -> Response:
    """Soft delete: the row stays (alerts refer to it) with ``deleted_at`` set."""
    _writable(user, (await _read(conn, user, zone_id, lock=True))[6])
    await conn.execute("UPDATE zones SET deleted_at = now() WHERE id = %s", (zone_id,))
    return Response(status_code=204)
