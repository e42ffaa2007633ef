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

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from pydantic import ValidationError

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.schemas_zones import ZoneCreate, ZoneKindName, ZonePatch, ZonePublic
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.store import zones as store
from tagwatch.store.zones import FIELDS, ZoneDraft, ZoneRow

router = APIRouter(prefix="/zones", tags=["zones"])
READ_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
WRITE_ROLES: tuple[Role, ...] = ("admin", "supervisor")

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


def _zone(row: ZoneRow) -> ZonePublic:
    return ZonePublic(
        id=row.id,
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]  # the CHECK constraint holds it to ZoneKindName
        geometry=row.geometry,
        radius_m=row.radius_m,
        buffer_m=row.buffer_m,
        subject_id=row.subject_id,
        group_name=row.group_name,
        region_id=row.region_id,
        victim_subject_id=row.victim_subject_id,
        schedule=row.schedule,
        thresholds=row.thresholds or {},
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        protects_subject_id=row.protects_subject_id,
        protects_victim=row.victim_subject_id is not None or row.protects_subject_id is not None,
    )


def _victim_of(zone: ZonePublic) -> int | None:
    if zone.victim_subject_id is not None:
        return zone.victim_subject_id
    return zone.protects_subject_id


async def _shown(
    conn: AsyncConnection, user: User, rows: list[ZoneRow], action: str
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
    """Everything the geofence core and the threshold rules say about the zone as drawn: the one
    check every provisioning path runs (store.zones.zone_problems)."""
    return store.zone_problems(ZoneDraft(**body.model_dump()))


async def _subject_region(conn: AsyncConnection, user: User, subject_id: int) -> str | None:
    """The subject's region when the caller may see the subject, else None."""
    return await store.subject_region(conn, subject_id, user.region_filter())


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
    return ZoneDraft(**body.model_dump()).values()


async def _read(conn: AsyncConnection, user: User, zone_id: int, *, lock: bool = False) -> ZoneRow:
    row = await store.zone_in_scope(conn, zone_id, user.region_filter(), lock=lock)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"zone {zone_id} not found")
    return row


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
            zone_id = await store.insert_zone(conn, values)
        else:
            await store.replace_zone(conn, zone_id, values)
    except ForeignKeyViolation as exc:
        raise _refer(
            "unknown_reference", f"unknown region or subject: {exc.diag.message_detail}"
        ) from exc
    shown = (await _shown(conn, user, [await _read(conn, user, zone_id)], "write"))[0]
    warnings = store.zone_warnings(ZoneDraft(**body.model_dump()))
    return shown.model_copy(update={"warnings": warnings}) if warnings else shown


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
    rows = await store.list_zones(
        conn,
        regions=user.region_filter(),
        after_id=after_id,
        subject_id=subject_id,
        kind=kind,
        region=region,
        limit=limit,
    )
    return await _shown(conn, user, rows, "list")


@router.get("/{zone_id}", response_model=ZonePublic, dependencies=[allow(*READ_ROLES)])
async def read_zone(zone_id: int, conn: Conn, user: CurrentUser) -> ZonePublic:
    return (await _shown(conn, user, [await _read(conn, user, zone_id)], "read"))[0]


@router.post("", response_model=ZonePublic, status_code=201, dependencies=[allow(*WRITE_ROLES)])
async def create_zone(body: ZoneCreate, conn: Conn, user: CurrentUser) -> ZonePublic:
    return await _store(conn, user, await _checked(conn, user, body), None)


@router.put("/{zone_id}", response_model=ZonePublic, dependencies=[allow(*WRITE_ROLES)])
async def replace_zone(zone_id: int, body: ZoneCreate, conn: Conn, user: CurrentUser) -> ZonePublic:
    _writable(user, (await _read(conn, user, zone_id, lock=True)).subject_id)
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
    _writable(user, (await _read(conn, user, zone_id, lock=True)).subject_id)
    await store.delete_zone(conn, zone_id)
    return Response(status_code=204)
