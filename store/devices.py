"""Devices and their assignments to subjects: the SQL of which device is whose, and when.

A device held now by a subject outside the caller's regions is invisible to them (it answers
like a missing one); devices in stock (held by nobody) are visible to all, to be assigned.
``regions`` is the caller's regions, or None for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

COLUMNS = "id, kind, owntracks_topic, expected_interval_s, created_at"
VISIBLE = (
    "(%(regions)s::text[] IS NULL OR NOT EXISTS (SELECT 1 FROM device_assignments a"
    " JOIN subjects s ON s.id = a.subject_id WHERE a.device_id = devices.id"
    " AND a.during @> now() AND NOT s.region_id = ANY(%(regions)s::text[])))"
)


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    owntracks_topic: str | None
    expected_interval_s: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Assignment:
    id: int
    device_id: str
    role: str
    from_: datetime
    to: datetime | None


async def list_devices(
    conn: AsyncConnection[Any], regions: Sequence[str] | None, after_id: str, limit: int
) -> list[Device]:
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        f"SELECT {COLUMNS} FROM devices WHERE id > %(after)s AND {VISIBLE}"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "limit": limit, "regions": regions},
    )
    return await cur.fetchall()


async def visible_device(
    conn: AsyncConnection[Any], device_id: str, regions: Sequence[str] | None
) -> Device | None:
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        f"SELECT {COLUMNS} FROM devices WHERE id = %(id)s AND {VISIBLE}",
        {"id": device_id, "regions": regions},
    )
    return await cur.fetchone()


async def create_device(
    conn: AsyncConnection[Any],
    device_id: str,
    kind: str,
    owntracks_topic: str | None,
    expected_interval_s: int,
) -> Device:
    """Raises UniqueViolation when the id or the OwnTracks topic is already registered."""
    cur = conn.cursor(row_factory=class_row(Device))
    await cur.execute(
        "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s) "
        f"VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}",
        (device_id, kind, owntracks_topic, expected_interval_s),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def assign(
    conn: AsyncConnection[Any],
    device_id: str,
    subject_id: int,
    role: str,
    from_: datetime,
    to: datetime | None,
) -> int:
    """The new assignment's id, for ``[from_, to)``. Raises ForeignKeyViolation for an unknown
    device, ExclusionViolation when the device is held by someone during that period."""
    row = await (
        await conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during) "
            "VALUES (%s, %s, %s, tstzrange(%s, %s, '[)')) RETURNING id",
            (device_id, subject_id, role, from_, to),
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


async def subject_assignments(conn: AsyncConnection[Any], subject_id: int) -> list[Assignment]:
    cur = conn.cursor(row_factory=class_row(Assignment))
    await cur.execute(
        "SELECT id, device_id, role, lower(during) AS from_, upper(during) AS to"
        " FROM device_assignments WHERE subject_id = %s ORDER BY lower(during)",
        (subject_id,),
    )
    return await cur.fetchall()
