"""Geography for admins (issue 16): regions' boundaries, offices with their service areas, the
tracing units that work from them, and what the platform knows about a position.

Roles (declared next to each route): admin only. Scope as for users and webhooks: an admin of
some regions sees and manages only those regions' boundaries, offices and units; anything of
another region answers 404 exactly as something that does not exist, and naming another
region's office as a unit's office answers the 422 of a missing office. Every change is written
to the audit log.

Geometries are GeoJSON (lon, lat) Polygons or MultiPolygons, checked by the geofence core's zone
rules (`zones.check_area`: closed simple rings, coordinates in range, no overlapping parts), of
any size; a refused one is a 422 whose detail lists the reasons. An office serves either a
polygon (``service_area``) or a circle of ``service_radius_m`` metres around its position.

Alerts are routed by these (store/places.py, `engine_repository.enqueue`); a change applies to
critical alerts routed from then on, never to one already routed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from pydantic import BaseModel, ConfigDict, Field

from tagwatch.api import audit
from tagwatch.api.deps import Conn
from tagwatch.api.routes.users import checked_regions
from tagwatch.api.schemas import REGION_PATTERN
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.geofence.places import (
    MAX_SERVICE_RADIUS_M,
    Area,
    OfficeDistance,
    Places,
    office_from_row,
)
from tagwatch.settings import Settings
from tagwatch.store import places as store
from tagwatch.store.places import OfficeDraft, OfficeRow, RegionRow, UnitRow

router = APIRouter(tags=["geography"])
ADMIN: tuple[Role, ...] = ("admin",)
NO_NUL = r"^[^\x00]*$"
GEOMETRY_DOC = "GeoJSON Polygon or MultiPolygon, positions [lon, lat]"
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[18.3, -34.0], [18.6, -34.0], [18.6, -33.8], [18.3, -33.8], [18.3, -34.0]]],
}


# ------------------------------------------------------------------ bodies


class RegionGeography(BaseModel):
    id: str
    name: str
    timezone: str | None
    boundary: dict[str, Any] | None = Field(description=GEOMETRY_DOC + "; none when not drawn")


class BoundaryPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boundary: dict[str, Any] = Field(description=GEOMETRY_DOC, examples=[SQUARE])


class OfficeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    region_id: str = Field(pattern=REGION_PATTERN)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    service_area: dict[str, Any] | None = Field(
        default=None, description=GEOMETRY_DOC + "; or give service_radius_m", examples=[SQUARE]
    )
    service_radius_m: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SERVICE_RADIUS_M,
        description="metres on the ground around the office; or give service_area",
    )


class OfficeUpdate(BaseModel):
    """Only the fields given change. Giving one kind of service area replaces the other."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    region_id: str | None = Field(default=None, pattern=REGION_PATTERN)
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    service_area: dict[str, Any] | None = None
    service_radius_m: float | None = Field(default=None, gt=0, le=MAX_SERVICE_RADIUS_M)


class OfficePublic(BaseModel):
    id: int
    name: str
    region_id: str
    lon: float
    lat: float
    service_area: dict[str, Any] | None
    service_radius_m: float | None
    created_at: datetime
    updated_at: datetime


class UnitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    office_id: int = Field(ge=1, description="the office it works from; its region is the unit's")


class UnitUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    office_id: int | None = Field(default=None, ge=1)


class UnitPublic(BaseModel):
    id: int
    name: str
    office_id: int
    region_id: str
    created_at: datetime
    updated_at: datetime


class OfficeAt(BaseModel):
    office_id: int
    name: str
    region_id: str
    distance_m: float = Field(description="geodesic, metres on the ground (WGS84)")
    serves: bool = Field(description="its service area holds the position")


class Whereabouts(BaseModel):
    lon: float
    lat: float
    regions: list[str] = Field(description="regions whose boundary holds the position")
    serving: list[OfficeAt] = Field(
        description="offices whose service area holds it, nearest first"
    )
    nearest: OfficeAt | None
    routing: dict[str, Any] | None = Field(
        description="where a critical alert of a subject of home_region would be routed"
    )


# ------------------------------------------------------------------ helpers


def _invalid(reasons: list[str]) -> HTTPException:
    return HTTPException(
        422,
        detail={"reason": "invalid_geometry", "message": "; ".join(reasons), "reasons": reasons},
    )


def _checked_office(draft: OfficeDraft) -> None:
    """422 with the geofence core's reasons when the office cannot serve as drawn."""
    try:
        office_from_row(
            0,
            draft.name,
            draft.region_id,
            draft.lon,
            draft.lat,
            draft.service_area,
            draft.service_radius_m,
        )
    except ValueError as exc:
        reasons = getattr(exc, "reasons", None) or [str(exc)]
        raise _invalid([f"service_area: {r}" for r in reasons]) from None


def _region(row: RegionRow) -> RegionGeography:
    return RegionGeography(id=row.id, name=row.name, timezone=row.timezone, boundary=row.boundary)


def _office(row: OfficeRow) -> OfficePublic:
    return OfficePublic(**{f: getattr(row, f) for f in OfficePublic.model_fields})


def _unit(row: UnitRow) -> UnitPublic:
    return UnitPublic(**{f: getattr(row, f) for f in UnitPublic.model_fields})


async def _region_in_scope(conn: AsyncConnection, admin: User, region_id: str) -> RegionRow:
    row = await store.region_in_scope(conn, region_id, admin.region_filter())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"region {region_id!r} not found")
    return row


async def _office_in_scope(
    conn: AsyncConnection, admin: User, office_id: int, *, for_update: bool = False
) -> OfficeRow:
    row = await store.office_in_scope(conn, office_id, admin.region_filter(), for_update=for_update)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"office {office_id} not found")
    return row


async def _unit_in_scope(conn: AsyncConnection, admin: User, unit_id: int) -> UnitRow:
    row = await store.unit_in_scope(conn, unit_id, admin.region_filter())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"tracing unit {unit_id} not found")
    return row


async def _unit_office(conn: AsyncConnection, admin: User, office_id: int) -> OfficeRow:
    """The office a unit is to work from: 422 whether missing or in another region."""
    row = await store.office_in_scope(conn, office_id, admin.region_filter())
    if row is None:
        raise HTTPException(
            422, detail={"reason": "unknown_office", "message": f"office {office_id} not found"}
        )
    return row


def _office_at(found: OfficeDistance) -> OfficeAt:
    return OfficeAt(
        office_id=found.office.office_id,
        name=found.office.name,
        region_id=found.office.region_id,
        distance_m=round(found.distance_m, 1),
        serves=found.serves,
    )


# ------------------------------------------------------------------ regions


@router.get("/regions/{region_id}", response_model=RegionGeography, dependencies=[allow(*ADMIN)])
async def read_region(region_id: str, conn: Conn, admin: CurrentUser) -> RegionGeography:
    """Admin. The region with its boundary."""
    return _region(await _region_in_scope(conn, admin, region_id))


@router.put(
    "/regions/{region_id}/boundary",
    response_model=RegionGeography,
    dependencies=[allow(*ADMIN)],
)
async def put_boundary(
    region_id: str, body: BoundaryPut, conn: Conn, admin: CurrentUser
) -> RegionGeography:
    """Admin. Draw (or redraw) the region's boundary; 422 with the reasons if refused."""
    await _region_in_scope(conn, admin, region_id)
    try:
        Area.from_geojson(body.boundary)
    except ValueError as exc:
        raise _invalid(getattr(exc, "reasons", None) or [str(exc)]) from None
    row = await store.set_boundary(conn, region_id, body.boundary)
    await audit.record(conn, admin, "region_boundary_set", None, region_id=region_id)
    return _region(row)


@router.delete("/regions/{region_id}/boundary", status_code=204, dependencies=[allow(*ADMIN)])
async def delete_boundary(region_id: str, conn: Conn, admin: CurrentUser) -> Response:
    """Admin. Remove the boundary (routing then says nothing about being outside it)."""
    await _region_in_scope(conn, admin, region_id)
    await store.set_boundary(conn, region_id, None)
    await audit.record(conn, admin, "region_boundary_clear", None, region_id=region_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ offices


@router.get("/offices", response_model=list[OfficePublic], dependencies=[allow(*ADMIN)])
async def list_offices(
    conn: Conn,
    admin: CurrentUser,
    region: str | None = Query(default=None, pattern=REGION_PATTERN),
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[OfficePublic]:
    """Admin. Offices in the admin's regions, by id."""
    rows = await store.list_offices(conn, admin.region_filter(), region, after_id, limit)
    return [_office(r) for r in rows]


@router.get("/offices/{office_id}", response_model=OfficePublic, dependencies=[allow(*ADMIN)])
async def read_office(office_id: int, conn: Conn, admin: CurrentUser) -> OfficePublic:
    """Admin."""
    return _office(await _office_in_scope(conn, admin, office_id))


@router.post("/offices", response_model=OfficePublic, status_code=201, dependencies=[allow(*ADMIN)])
async def create_office(body: OfficeCreate, conn: Conn, admin: CurrentUser) -> OfficePublic:
    """Admin. 403 for a region not the admin's, 422 for an unknown one or a refused area."""
    draft = OfficeDraft(**body.model_dump())
    _checked_office(draft)
    await checked_regions(conn, admin, [body.region_id])
    row = await store.create_office(conn, draft)
    await audit.record(
        conn, admin, "office_create", None, office_id=row.id, name=row.name,
        region_id=row.region_id,
    )  # fmt: skip
    return _office(row)


@router.patch("/offices/{office_id}", response_model=OfficePublic, dependencies=[allow(*ADMIN)])
async def update_office(
    office_id: int, body: OfficeUpdate, conn: Conn, admin: CurrentUser
) -> OfficePublic:
    """Admin. 409 when moving to another region an office that tracing units work from."""
    current = await _office_in_scope(conn, admin, office_id, for_update=True)
    given = body.model_dump(exclude_unset=True)
    merged: dict[str, Any] = {
        "name": current.name,
        "region_id": current.region_id,
        "lon": current.lon,
        "lat": current.lat,
        "service_area": current.service_area,
        "service_radius_m": current.service_radius_m,
    }
    for field in ("name", "region_id", "lon", "lat"):
        if given.get(field) is not None:
            merged[field] = given[field]
    if given.get("service_area") is not None:
        merged["service_area"] = given["service_area"]
        merged["service_radius_m"] = given.get("service_radius_m")
    elif given.get("service_radius_m") is not None:
        merged["service_radius_m"] = given["service_radius_m"]
        merged["service_area"] = None
    draft = OfficeDraft(**merged)
    _checked_office(draft)
    if draft.region_id != current.region_id:
        await checked_regions(conn, admin, [draft.region_id])
    try:
        row = await store.update_office(conn, office_id, draft)
    except ForeignKeyViolation:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={
                "reason": "units_attached",
                "message": "tracing units work from this office: move them before its region",
            },
        ) from None
    await audit.record(
        conn, admin, "office_update", None, office_id=office_id,
        changes=body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    return _office(row)


@router.delete("/offices/{office_id}", status_code=204, dependencies=[allow(*ADMIN)])
async def delete_office(office_id: int, conn: Conn, admin: CurrentUser) -> Response:
    """Admin. 409 while tracing units work from it."""
    await _office_in_scope(conn, admin, office_id, for_update=True)
    if await store.office_unit_count(conn, office_id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={"reason": "units_attached", "message": "tracing units work from this office"},
        )
    await store.delete_office(conn, office_id)
    await audit.record(conn, admin, "office_delete", None, office_id=office_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ tracing units


@router.get("/tracing-units", response_model=list[UnitPublic], dependencies=[allow(*ADMIN)])
async def list_units(
    conn: Conn,
    admin: CurrentUser,
    office_id: int | None = Query(default=None, ge=1),
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[UnitPublic]:
    """Admin. Tracing units in the admin's regions, by id."""
    rows = await store.list_units(conn, admin.region_filter(), office_id, after_id, limit)
    return [_unit(r) for r in rows]


@router.get("/tracing-units/{unit_id}", response_model=UnitPublic, dependencies=[allow(*ADMIN)])
async def read_unit(unit_id: int, conn: Conn, admin: CurrentUser) -> UnitPublic:
    """Admin."""
    return _unit(await _unit_in_scope(conn, admin, unit_id))


@router.post(
    "/tracing-units", response_model=UnitPublic, status_code=201, dependencies=[allow(*ADMIN)]
)
async def create_unit(body: UnitCreate, conn: Conn, admin: CurrentUser) -> UnitPublic:
    """Admin. The unit works in its office's region."""
    office = await _unit_office(conn, admin, body.office_id)
    row = await store.create_unit(conn, body.name, office.id, office.region_id)
    await audit.record(
        conn, admin, "tracing_unit_create", None, unit_id=row.id, name=row.name,
        office_id=row.office_id, region_id=row.region_id,
    )  # fmt: skip
    return _unit(row)


@router.patch("/tracing-units/{unit_id}", response_model=UnitPublic, dependencies=[allow(*ADMIN)])
async def update_unit(unit_id: int, body: UnitUpdate, conn: Conn, admin: CurrentUser) -> UnitPublic:
    """Admin. Moving a unit to another office moves it to that office's region."""
    current = await _unit_in_scope(conn, admin, unit_id)
    office_id, region_id = current.office_id, current.region_id
    if body.office_id is not None:
        office = await _unit_office(conn, admin, body.office_id)
        office_id, region_id = office.id, office.region_id
    row = await store.update_unit(conn, unit_id, body.name or current.name, office_id, region_id)
    await audit.record(
        conn, admin, "tracing_unit_update", None, unit_id=unit_id,
        changes=body.model_dump(mode="json", exclude_none=True),
    )  # fmt: skip
    return _unit(row)


@router.delete("/tracing-units/{unit_id}", status_code=204, dependencies=[allow(*ADMIN)])
async def delete_unit(unit_id: int, conn: Conn, admin: CurrentUser) -> Response:
    """Admin. 409 while an active webhook subscription targets the unit."""
    await _unit_in_scope(conn, admin, unit_id)
    if await store.active_subscriptions_of(conn, unit_id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={
                "reason": "subscriptions_attached",
                "message": "an active webhook subscription targets this unit",
            },
        )
    await store.delete_unit(conn, unit_id)
    await audit.record(conn, admin, "tracing_unit_delete", None, unit_id=unit_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ a position


@router.get("/places/locate", response_model=Whereabouts, dependencies=[allow(*ADMIN)])
async def locate(
    conn: Conn,
    admin: CurrentUser,
    request: Request,
    lon: float = Query(ge=-180, le=180),
    lat: float = Query(ge=-90, le=90),
    home_region: str | None = Query(default=None, pattern=REGION_PATTERN),
) -> Whereabouts:
    """Admin. Which of the admin's regions and offices hold the position, the nearest office,
    and where a critical alert there would be routed (within the admin's regions only; the
    platform itself routes across all of them)."""
    places: Places = await store.places_in_scope(conn, admin.region_filter())
    where = places.locate(lon, lat)
    settings: Settings = request.app.state.settings
    route = places.route(lon, lat, home_region, settings.routing_max_office_distance_m)
    return Whereabouts(
        lon=lon,
        lat=lat,
        regions=list(where.regions),
        serving=[_office_at(d) for d in where.serving],
        nearest=None if where.nearest is None else _office_at(where.nearest),
        routing=None if route is None else route.to_json(),
    )
