"""Zones: the SQL of the areas the rules watch, and the one check every new zone passes.

A zone is checked by the geofence core (shape, sizes, schedule) and the alert core (threshold
overrides) before it is written, whoever writes it: the API, the scenario runner, the demo
simulator and the benchmarks all provision through ``ZoneDraft`` and ``zone_problems`` (the
simulators' and benchmarks' own INSERTs used to skip it).

Region scope: a zone is in its subject's region, or its own ``region_id`` for a global zone; a
zone with neither applies everywhere and is visible to all. ``regions`` is the caller's regions,
or None for all. Deletion is soft: alerts keep referring to the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import shapely
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tagwatch.alerts.thresholds import DEFAULTS, INDOOR_ACCURACY_SPAN_M, ThresholdError
from tagwatch.geofence import Zone, ZoneValidationError
from tagwatch.geofence.zones import check_zone, validate_zone

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
INSERT = (
    f"INSERT INTO zones ({', '.join(FIELDS)})"
    f" VALUES ({', '.join(f'%({f})s' for f in FIELDS)}) RETURNING id"
)
JSON_FIELDS = ("geometry", "schedule", "thresholds")


@dataclass(frozen=True, slots=True)
class ZoneDraft:
    """A zone as it is to be written: exactly FIELDS, JSON as plain values (the API's
    ``ZoneCreate`` has the same fields, so ``ZoneDraft(**body.model_dump())`` is its draft)."""

    name: str
    kind: str
    geometry: dict[str, Any] | None = None
    radius_m: float | None = None
    buffer_m: float | None = None
    subject_id: int | None = None
    group_name: str | None = None
    region_id: str | None = None
    victim_subject_id: int | None = None
    protects_subject_id: int | None = None
    schedule: dict[str, Any] | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The parameters of INSERT (and ``replace_zone``), JSON columns wrapped for psycopg."""
        values = asdict(self)
        for name in JSON_FIELDS:
            if values[name] is not None:
                values[name] = Jsonb(values[name])
        return values


class InvalidZone(ValueError):
    """A draft the geofence core or the threshold rules refuse; ``reasons`` says why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def zone_problems(draft: ZoneDraft) -> list[str]:
    """Everything the geofence core and the threshold rules say about the zone as drawn (empty
    when it may be stored). The references (does the subject exist, is it in the caller's
    regions) are the caller's to check: only the API has a caller to check them against."""
    reasons: list[str] = []
    if draft.kind == "victim" and draft.victim_subject_id is None:
        reasons.append("a victim zone needs victim_subject_id (the victim whose phone it follows)")
    if draft.kind != "victim" and draft.victim_subject_id is not None:
        reasons.append("victim_subject_id belongs to victim zones only")
    if draft.kind != "exclusion" and draft.protects_subject_id is not None:
        reasons.append(
            "protects_subject_id belongs to exclusion zones only "
            "(a victim zone names its victim in victim_subject_id)"
        )
    if draft.subject_id is not None and draft.subject_id in (
        draft.victim_subject_id,
        draft.protects_subject_id,
    ):
        reasons.append("a zone cannot protect its own subject from them")
    if draft.subject_id is not None and draft.group_name is not None:
        reasons.append("a zone belongs to one subject or to a group, not both")
    for name in ("radius_m", "buffer_m"):
        value = getattr(draft, name)
        if value is not None and not math.isfinite(value):
            reasons.append(f"{name} must be a finite number of metres")
    if reasons:
        return reasons
    try:
        validate_zone(_zone_of(draft))
    except ZoneValidationError as exc:
        reasons.extend(exc.reasons)
    except Exception as exc:  # malformed input is a refusal, never a crash
        reasons.append(f"malformed zone: {exc!r}")
    try:
        DEFAULTS.with_overrides(draft.thresholds)
    except ThresholdError as exc:
        reasons.append(f"thresholds: {exc}")
    return reasons


def _zone_of(draft: ZoneDraft) -> Zone:
    return Zone.from_json(
        {
            "zone_id": 0,
            "kind": draft.kind,
            "geometry": draft.geometry,
            "radius_m": draft.radius_m,
            "buffer_m": draft.buffer_m,
            "subject_id": draft.subject_id,
            "group": draft.group_name,
            "schedule": draft.schedule,
        }
    )


def zone_width_m(draft: ZoneDraft) -> float | None:
    """The diameter of the largest circle the zone holds, in metres (None for a zone the check
    refuses, or a victim zone): how wide an accuracy circle can be and still lie wholly inside."""
    try:
        checked = check_zone(_zone_of(draft))
    except Exception:  # zone_problems reports it
        return None
    if checked.circle is not None:
        return 2.0 * checked.circle.radius_m
    if checked.outline is None:
        return None
    parts = shapely.get_parts(checked.outline.polygon)
    radii = [shapely.maximum_inscribed_circle(p, 0.5).length for p in parts]
    return 2.0 * max(radii, default=0.0)


def zone_warnings(draft: ZoneDraft) -> list[str]:
    """What is worth telling whoever draws the zone, without refusing it (the zone is stored).

    A curfew (home) zone narrower than ``INDOOR_ACCURACY_SPAN_M`` cannot hold a typical indoor
    fix's accuracy circle: GPS will show the subject's presence as consistent with the home at
    best, never verified (the compliance report says which, night by night), so a home beacon
    or a zone drawn around the whole plot is the way to verify it."""
    if draft.kind != "curfew":
        return []
    width = zone_width_m(draft)
    if width is None or width >= INDOOR_ACCURACY_SPAN_M:
        return []
    return [
        f"curfew zone holds no circle wider than {width:.0f} m, less than the "
        f"{INDOOR_ACCURACY_SPAN_M:.0f} m of a typical indoor accuracy circle: GPS can show "
        "presence as consistent with the home, never verify it; consider a home beacon or a "
        "zone around the whole plot"
    ]


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
    row = await (await conn.execute(INSERT, values)).fetchone()
    assert row is not None
    return int(row[0])


def create_zone(conn: psycopg.Connection[Any], draft: ZoneDraft) -> int:
    """Provisioning outside the API (scenarios, the demo, benchmarks): the new zone's id, after
    the same checks as the API's. Raises InvalidZone, or ForeignKeyViolation for an unknown
    region or subject."""
    reasons = zone_problems(draft)
    if reasons:
        raise InvalidZone(reasons)
    row = conn.execute(INSERT, draft.values()).fetchone()
    assert row is not None
    return int(row[0])


def named_zones(
    conn: psycopg.Connection[Any],
    name_like: str,
    *,
    region_id: str | None = None,
    include_deleted: bool = False,
) -> int:
    """How many zones have a name LIKE ``name_like`` (in ``region_id``, if given): lets
    provisioning that is run again leave the zones it made the first time alone."""
    row = conn.execute(
        "SELECT count(*) FROM zones WHERE name LIKE %(name)s"
        " AND (%(region)s::text IS NULL OR region_id = %(region)s)"
        " AND (%(deleted)s OR deleted_at IS NULL)",
        {"name": name_like, "region": region_id, "deleted": include_deleted},
    ).fetchone()
    return int(row[0]) if row else 0


async def replace_zone(conn: AsyncConnection[Any], zone_id: int, values: Mapping[str, Any]) -> None:
    """Raises ForeignKeyViolation for an unknown region or subject."""
    await conn.execute(
        f"UPDATE zones SET {', '.join(f'{f} = %({f})s' for f in FIELDS)} WHERE id = %(id)s",
        {**values, "id": zone_id},
    )


async def delete_zone(conn: AsyncConnection[Any], zone_id: int) -> None:
    await conn.execute("UPDATE zones SET deleted_at = now() WHERE id = %s", (zone_id,))
