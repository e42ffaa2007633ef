"""Zones: the SQL of the areas the rules watch (validation is the geofence core's, in the API).

Region scope: a zone is in its subject's region, or its own ``region_id`` for a global zone; a
zone with neither applies everywhere and is visible to all. ``regions`` is the caller's regions,
or None for all. Deletion is soft: alerts keep referring to the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

COLUMNS = (
    "z.id, z.name, z.kind, z.geometry, z.radius_m, z.buffer_m, z.subject_id, z.group_name,"
    " COALESCE(s.region_id, z.region_id) AS region_id, z.victim_subject_id, z.schedule,"
    " z.thresholds, z.created_at, z.updated_at, z.revision, z.protects_subject_id"
)
# The region a zone is in, for scoping: its subject's, or its own for a global zone.
ZONE_REGION = "(CASE WHEN z.subject_id IS NULL THEN z.region_id ELSE s.region_id END)"
SCOPED = (
    " FROM zones z LEFT JOIN subjects s ON s.id = z.subject_id"
    " WHERE z.deleted_at IS NULL AND (%(regions)s::text[] IS NULL"
    f" OR {ZONE_REGION} = ANY(%(regions)s::text[])"
    " OR (z.subject_id IS NULL AND z.region_id IS NULL))"
)
# The columns a zone is written with (insert_zone and replace_zone take exactly these).
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


@dataclass(frozen=True, slots=True)
class ZoneRow:
    id: int
    name: str
    kind: str
    geometry: dict[str, Any] | None
    radius_m: float | None
    buffer_m: float | None
    subject_id: int | None
    group_name: str | None
    region_id: str | None  # the subject's region for a subject's zone
    victim_subject_id: int | None
    schedule: dict[str, Any] | None
    thresholds: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    revision: int
    protects_subject_id: int | None


async def zone_in_scope(
    conn: AsyncConnection[Any], zone_id: int, regions: Sequence[str] | None, *, lock: bool
) -> ZoneRow | None:
    """``lock`` holds the zone's row until the transaction ends (before a write)."""
    cur = conn.cursor(row_factory=class_row(ZoneRow))
    await cur.execute(
        f"SELECT {COLUMNS} {SCOPED} AND z.id = %(id)s" + (" FOR UPDATE OF z" if lock else ""),
        {"regions": regions, "id": zone_id},
    )
    return await cur.fetchone()


async def list_zones(
    conn: AsyncConnection[Any],
    *,
    regions: Sequence[str] | None,
    after_id: int,
    subject_id: int | None,
    kind: str | None,
    region: str | None,
    limit: int,
) -> list[ZoneRow]:
    cur = conn.cursor(row_factory=class_row(ZoneRow))
    await cur.execute(
        f"SELECT {COLUMNS} {SCOPED} AND z.id > %(after)s"
        " AND (%(subject)s::bigint IS NULL OR z.subject_id = %(subject)s)"
        " AND (%(kind)s::text IS NULL OR z.kind = %(kind)s)"
        f" AND (%(region)s::text IS NULL OR {ZONE_REGION} = %(region)s)"
        " ORDER BY z.id LIMIT %(limit)s",
        {
            "regions": regions,
            "after": after_id,
            "subject": subject_id,
            "kind": kind,
            "region": region,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def subject_region(
    conn: AsyncConnection[Any], subject_id: int, regions: Sequence[str] | None
) -> str | None:
    """The subject's region when it is within ``regions``, else None."""
    row = await (
        await conn.execute(
            "SELECT region_id FROM subjects WHERE id = %s"
            " AND (%s::text[] IS NULL OR region_id = ANY(%s::text[]))",
            (subject_id, regions, regions),
        )
    ).fetchone()
    return None if row is None else str(row[0])


async def insert_zone(conn: AsyncConnection[Any], values: Mapping[str, Any]) -> int:
    """The new zone's id; ``values`` holds FIELDS, already validated. Raises
    ForeignKeyViolation for an unknown region or subject."""
    row = await (
        await conn.execute(
            f"INSERT INTO zones ({', '.join(FIELDS)})"
            f" VALUES ({', '.join(f'%({f})s' for f in FIELDS)}) RETURNING id",
            values,
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


async def replace_zone(conn: AsyncConnection[Any], zone_id: int, values: Mapping[str, Any]) -> None:
    """Raises ForeignKeyViolation for an unknown region or subject."""
    await conn.execute(
        f"UPDATE zones SET {', '.join(f'{f} = %({f})s' for f in FIELDS)} WHERE id = %(id)s",
        {**values, "id": zone_id},
    )


async def delete_zone(conn: AsyncConnection[Any], zone_id: int) -> None:
    await conn.execute("UPDATE zones SET deleted_at = now() WHERE id = %s", (zone_id,))
