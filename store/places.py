"""Regions' boundaries, offices and tracing units (migration 0020), and where a critical alert
is routed.

Scope as elsewhere: ``scope`` is the caller's regions, or None for all; an office or a tracing
unit belongs to its region, and one outside the scope is never fetched. Geometries are checked
by the geofence core before they reach these functions (api/routes/places.py); here they are
stored as drawn.

Routing (`route_alert`) runs inside `engine_repository.enqueue`, in the transaction that opens
or changes the alert; see its docstring for why there and not in the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tagwatch.geofence.places import Area, Office, Places, RegionArea, office_from_row

log = logging.getLogger(__name__)

OFFICE_COLUMNS = (
    "id, name, region_id, lon, lat, service_area, service_radius_m, created_at, updated_at"
)
UNIT_COLUMNS = "id, name, office_id, region_id, created_at, updated_at"
IN_SCOPE = "(%(scope)s::text[] IS NULL OR region_id = ANY(%(scope)s::text[]))"


@dataclass(frozen=True, slots=True)
class RegionRow:
    id: str
    name: str
    timezone: str | None
    boundary: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OfficeRow:
    id: int
    name: str
    region_id: str
    lon: float
    lat: float
    service_area: dict[str, Any] | None
    service_radius_m: float | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OfficeDraft:
    name: str
    region_id: str
    lon: float
    lat: float
    service_area: Mapping[str, Any] | None
    service_radius_m: float | None


@dataclass(frozen=True, slots=True)
class UnitRow:
    id: int
    name: str
    office_id: int
    region_id: str
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------ regions


async def region_in_scope(
    conn: AsyncConnection[Any], region_id: str, scope: Sequence[str] | None
) -> RegionRow | None:
    cur = conn.cursor(row_factory=class_row(RegionRow))
    await cur.execute(
        "SELECT id, name, timezone, boundary FROM regions WHERE id = %(id)s"
        " AND (%(scope)s::text[] IS NULL OR id = ANY(%(scope)s::text[]))",
        {"id": region_id, "scope": scope},
    )
    return await cur.fetchone()


async def bounded_regions(conn: AsyncConnection[Any], scope: Sequence[str] | None) -> set[str]:
    """The ids of the regions in scope that carry a boundary."""
    cur = await conn.execute(
        "SELECT id FROM regions WHERE boundary IS NOT NULL"
        " AND (%(scope)s::text[] IS NULL OR id = ANY(%(scope)s::text[]))",
        {"scope": scope},
    )
    return {row[0] for row in await cur.fetchall()}


async def set_boundary(
    conn: AsyncConnection[Any], region_id: str, boundary: Mapping[str, Any] | None
) -> RegionRow:
    """Replace (or with None, remove) the region's boundary."""
    cur = conn.cursor(row_factory=class_row(RegionRow))
    await cur.execute(
        "UPDATE regions SET boundary = %s WHERE id = %s RETURNING id, name, timezone, boundary",
        (None if boundary is None else Jsonb(dict(boundary)), region_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


# ------------------------------------------------------------------ offices


async def list_offices(
    conn: AsyncConnection[Any],
    scope: Sequence[str] | None,
    region: str | None,
    after_id: int,
    limit: int,
) -> list[OfficeRow]:
    cur = conn.cursor(row_factory=class_row(OfficeRow))
    await cur.execute(
        f"SELECT {OFFICE_COLUMNS} FROM offices WHERE id > %(after)s AND {IN_SCOPE}"
        " AND (%(region)s::text IS NULL OR region_id = %(region)s) ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "scope": scope, "region": region, "limit": limit},
    )
    return await cur.fetchall()


async def office_in_scope(
    conn: AsyncConnection[Any],
    office_id: int,
    scope: Sequence[str] | None,
    *,
    for_update: bool = False,
) -> OfficeRow | None:
    cur = conn.cursor(row_factory=class_row(OfficeRow))
    lock = " FOR UPDATE" if for_update else ""
    await cur.execute(
        f"SELECT {OFFICE_COLUMNS} FROM offices WHERE id = %(id)s AND {IN_SCOPE}{lock}",
        {"id": office_id, "scope": scope},
    )
    return await cur.fetchone()


def _office_values(draft: OfficeDraft) -> dict[str, Any]:
    return {
        "name": draft.name,
        "region": draft.region_id,
        "lon": draft.lon,
        "lat": draft.lat,
        "area": None if draft.service_area is None else Jsonb(dict(draft.service_area)),
        "radius": draft.service_radius_m,
    }


async def create_office(conn: AsyncConnection[Any], draft: OfficeDraft) -> OfficeRow:
    cur = conn.cursor(row_factory=class_row(OfficeRow))
    await cur.execute(
        "INSERT INTO offices (name, region_id, lon, lat, service_area, service_radius_m)"
        " VALUES (%(name)s, %(region)s, %(lon)s, %(lat)s, %(area)s, %(radius)s)"
        f" RETURNING {OFFICE_COLUMNS}",
        _office_values(draft),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_office(
    conn: AsyncConnection[Any], office_id: int, draft: OfficeDraft
) -> OfficeRow:
    """The whole office as merged by the caller. Raises ForeignKeyViolation when the region
    changes while tracing units are attached (they belong to the office's region)."""
    cur = conn.cursor(row_factory=class_row(OfficeRow))
    await cur.execute(
        "UPDATE offices SET name = %(name)s, region_id = %(region)s, lon = %(lon)s,"
        " lat = %(lat)s, service_area = %(area)s, service_radius_m = %(radius)s,"
        f" updated_at = now() WHERE id = %(id)s RETURNING {OFFICE_COLUMNS}",
        {**_office_values(draft), "id": office_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def office_unit_count(conn: AsyncConnection[Any], office_id: int) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM tracing_units WHERE office_id = %s", (office_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def delete_office(conn: AsyncConnection[Any], office_id: int) -> None:
    """Raises ForeignKeyViolation while tracing units are attached."""
    await conn.execute("DELETE FROM offices WHERE id = %s", (office_id,))


# ------------------------------------------------------------------ tracing units


async def list_units(
    conn: AsyncConnection[Any],
    scope: Sequence[str] | None,
    office_id: int | None,
    after_id: int,
    limit: int,
) -> list[UnitRow]:
    cur = conn.cursor(row_factory=class_row(UnitRow))
    await cur.execute(
        f"SELECT {UNIT_COLUMNS} FROM tracing_units WHERE id > %(after)s AND {IN_SCOPE}"
        " AND (%(office)s::bigint IS NULL OR office_id = %(office)s)"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "scope": scope, "office": office_id, "limit": limit},
    )
    return await cur.fetchall()


async def unit_in_scope(
    conn: AsyncConnection[Any], unit_id: int, scope: Sequence[str] | None
) -> UnitRow | None:
    cur = conn.cursor(row_factory=class_row(UnitRow))
    await cur.execute(
        f"SELECT {UNIT_COLUMNS} FROM tracing_units WHERE id = %(id)s AND {IN_SCOPE}",
        {"id": unit_id, "scope": scope},
    )
    return await cur.fetchone()


async def create_unit(
    conn: AsyncConnection[Any], name: str, office_id: int, region_id: str
) -> UnitRow:
    cur = conn.cursor(row_factory=class_row(UnitRow))
    await cur.execute(
        "INSERT INTO tracing_units (name, office_id, region_id) VALUES (%s, %s, %s)"
        f" RETURNING {UNIT_COLUMNS}",
        (name, office_id, region_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_unit(
    conn: AsyncConnection[Any], unit_id: int, name: str, office_id: int, region_id: str
) -> UnitRow:
    cur = conn.cursor(row_factory=class_row(UnitRow))
    await cur.execute(
        "UPDATE tracing_units SET name = %s, office_id = %s, region_id = %s, updated_at = now()"
        f" WHERE id = %s RETURNING {UNIT_COLUMNS}",
        (name, office_id, region_id, unit_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def active_subscriptions_of(conn: AsyncConnection[Any], unit_id: int) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM webhook_subscriptions WHERE tracing_unit_id = %s AND active",
        (unit_id,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def delete_unit(conn: AsyncConnection[Any], unit_id: int) -> None:
    await conn.execute("DELETE FROM tracing_units WHERE id = %s", (unit_id,))


# ------------------------------------------------------------------ places and routing


def build_places(regions: Sequence[tuple[str, Any]], offices: Sequence[tuple[Any, ...]]) -> Places:
    """Places from stored rows: (region id, boundary) and the office columns of ``offices``
    (id, name, region_id, lon, lat, service_area, service_radius_m). A row the core refuses
    (written before a stricter check, or by hand) is left out and logged, never guessed at."""
    areas: list[RegionArea] = []
    for region_id, boundary in regions:
        try:
            areas.append(RegionArea(region_id, Area.from_geojson(boundary)))
        except ValueError as exc:
            log.warning("region %s: boundary left out of routing: %s", region_id, exc)
    built: list[Office] = []
    for row in offices:
        try:
            built.append(office_from_row(*row))
        except ValueError as exc:
            log.warning("office %s: left out of routing: %s", row[0], exc)
    return Places(areas, built)


_REGIONS_WITH_BOUNDARY = "SELECT id, boundary FROM regions WHERE boundary IS NOT NULL"
_OFFICES = (
    "SELECT id, name, region_id, lon, lat, service_area, service_radius_m FROM offices"
    " WHERE %(scope)s::text[] IS NULL OR region_id = ANY(%(scope)s::text[])"
)


async def places_in_scope(conn: AsyncConnection[Any], scope: Sequence[str] | None) -> Places:
    """The regions and offices the caller may see, for `GET /places/locate`."""
    regions = await (
        await conn.execute(
            _REGIONS_WITH_BOUNDARY + " AND (%(scope)s::text[] IS NULL OR id = ANY(%(scope)s))",
            {"scope": scope},
        )
    ).fetchall()
    offices = await (await conn.execute(_OFFICES, {"scope": scope})).fetchall()
    return build_places([(r[0], r[1]) for r in regions], [tuple(r) for r in offices])


def load_places(conn: psycopg.Connection[Any]) -> Places:
    """Every region with a boundary and every office (for routing, which crosses regions)."""
    regions = conn.execute(_REGIONS_WITH_BOUNDARY).fetchall()
    offices = conn.execute(_OFFICES, {"scope": None}).fetchall()
    return build_places([(r[0], r[1]) for r in regions], [tuple(r) for r in offices])


def route_alert(
    conn: psycopg.Connection[Any], alert_id: int, home_region: str | None, max_distance_m: float
) -> dict[str, Any] | None:
    """Where the alert goes beside its home region: the routing kept on the alert, or decided
    now from its position (the alert's own, else the absconder's ``last_known``) and kept.
    None when the alert has no position, or no office serves it or lies within reach."""
    row = conn.execute(
        "SELECT routing, lon, lat, details->'last_known'->>'lon',"
        " details->'last_known'->>'lat' FROM alerts WHERE id = %s",
        (alert_id,),
    ).fetchone()
    if row is None:
        return None
    stored, lon, lat, known_lon, known_lat = row
    if stored is not None:
        return dict(stored)
    if lon is None or lat is None:
        if known_lon is None or known_lat is None:
            return None
        lon, lat = float(known_lon), float(known_lat)
    route = load_places(conn).route(float(lon), float(lat), home_region, max_distance_m)
    if route is None:
        return None
    units = conn.execute(
        "SELECT id, name FROM tracing_units WHERE office_id = %s ORDER BY id",
        (route.office.office_id,),
    ).fetchall()
    routing = {**route.to_json(), "tracing_units": [{"id": u[0], "name": u[1]} for u in units]}
    conn.execute("UPDATE alerts SET routing = %s WHERE id = %s", (Jsonb(routing), alert_id))
    return routing
