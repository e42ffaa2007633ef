"""A subject's fixes, device events and alerts over a range, as an export hands them on.

Fixes and events are those of every device the subject held (either role; ``role`` says which)
inside its holding period and the range; alerts are the subject's own, opened in the range. Rows
come from a server-side cursor ``batch`` at a time, so a year's export never sits in memory, and
by name (``dict_row``): ``COLUMNS[kind]`` is what each row has, in the order a CSV writes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tagwatch.store.fix_columns import value

Kind = Literal["fixes", "events", "alerts"]

HELD = """
    FROM device_assignments da JOIN {table} x ON x.device_id = da.device_id
     AND x.ts >= greatest(lower(da.during), %(start)s)
     AND x.ts < least(upper(da.during), %(end)s)
    WHERE da.subject_id = %(subject)s
"""

COLUMNS: Final[dict[Kind, tuple[str, ...]]] = {
    "fixes": (
        "device_id",
        "role",
        "ts",
        "lat",
        "lon",
        "acc",
        "alt",
        "spd",
        "hdg",
        "sats",
        "batt",
        "src",
        "seq",
        "received_at",
        "late",
    ),
    "events": ("device_id", "role", "ts", "type", "seq", "batt", "detail", "received_at"),
    "alerts": (
        "id",
        "type",
        "severity",
        "status",
        "device_id",
        "zone_id",
        "region_id",
        "opened_at",
        "first_fix_at",
        "last_fix_at",
        "cleared_at",
        "lat",
        "lon",
        "worst_distance_m",
        "fix_count",
        "late",
        "escalated",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "outcome",
        "resolution_note",
        "details",
    ),
}

# A stored sequence of -1 means "the device sent none": exported as empty, not as a number.
# The numbers as read, whichever column holds them (migration 0027).
_X = {c: value(c, "x") for c in ("lat", "lon", "acc", "spd", "hdg", "received_at")}
QUERIES: Final[dict[Kind, str]] = {
    "fixes": f"SELECT x.device_id, da.role, x.ts, {_X['lat']} AS lat, {_X['lon']} AS lon,"
    f" {_X['acc']} AS acc, x.alt, {_X['spd']} AS spd, {_X['hdg']} AS hdg,"
    f" x.sats, x.batt, x.src, NULLIF(x.seq, -1) AS seq, {_X['received_at']} AS received_at,"
    f" {_X['received_at']} - x.ts > make_interval(secs => %(late_after_s)s) AS late"
    + HELD.format(table="fixes")
    + " ORDER BY x.ts, x.device_id, x.seq",
    "events": "SELECT x.device_id, da.role, x.ts, x.type, NULLIF(x.seq, -1) AS seq, x.batt,"
    " x.detail, x.received_at"
    + HELD.format(table="device_events")
    + " ORDER BY x.ts, x.device_id, x.seq",
    "alerts": "SELECT id, type, severity, status, device_id, zone_id, region_id, opened_at,"
    " first_fix_at, last_fix_at, cleared_at, lat, lon, worst_distance_m, fix_count, late,"
    " escalated, acknowledged_at, acknowledged_by, resolved_at, resolved_by, outcome,"
    " resolution_note, details FROM alerts WHERE subject_id = %(subject)s"
    " AND opened_at >= %(start)s AND opened_at < %(end)s ORDER BY opened_at, id",
}


async def rows(
    conn: AsyncConnection[Any],
    kind: Kind,
    subject_id: int,
    start: datetime,
    end: datetime,
    *,
    late_after_s: float,
    batch: int,
) -> AsyncIterator[dict[str, Any]]:
    """The ``kind`` rows of ``subject_id`` in [start, end), oldest first. ``late_after_s``: a fix
    received this long after its own time is ``late`` (the API's threshold, passed in so that
    the export and the location reads cannot disagree)."""
    params = {"subject": subject_id, "start": start, "end": end, "late_after_s": late_after_s}
    async with conn.cursor(name=f"export_{kind}", row_factory=dict_row) as cursor:
        cursor.itersize = batch
        await cursor.execute(QUERIES[kind], params)
        async for row in cursor:
            yield row
