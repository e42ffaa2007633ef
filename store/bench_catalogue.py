"""The SQL of `tagwatch bench cold-start`: a national catalogue (subjects and their zones) written
in bulk, and the probe alerts it waits for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tagwatch.store.subjects import ensure_region
from tagwatch.store.zones import FIELDS


def seed_subjects(
    conn: psycopg.Connection[Any],
    region: tuple[str, str],
    rows: Sequence[tuple[str, str, Sequence[str]]],
) -> list[int]:
    """(name, time zone, groups) per subject, in one statement; their ids in order."""
    ensure_region(conn, *region)
    names = [r[0] for r in rows]
    zones = [r[1] for r in rows]
    groups = ["{" + ",".join(r[2]) + "}" for r in rows]
    return [
        int(sid)
        for (sid,) in conn.execute(
            "INSERT INTO subjects (name, case_ref, region_id, timezone, groups)"
            " SELECT n, n, %s, z, g::text[] FROM unnest(%s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS t(n, z, g, i) ORDER BY i RETURNING id",
            (region[0], names, zones, groups),
        ).fetchall()
    ]


# The zone columns the catalogue writes: FIELDS, in their order, less those it leaves at their
# defaults (victim zones and thresholds overrides are not part of it).
ZONE_COLUMNS = tuple(
    f for f in FIELDS if f not in ("victim_subject_id", "protects_subject_id", "thresholds")
)
_GEOMETRY, _SCHEDULE = ZONE_COLUMNS.index("geometry"), ZONE_COLUMNS.index("schedule")


def seed_zones(conn: psycopg.Connection[Any], rows: Sequence[Sequence[Any]]) -> int:
    """Zones by COPY, one tuple of ``ZONE_COLUMNS`` each (geometry and schedule as dicts)."""
    with conn.cursor().copy(f"COPY zones ({', '.join(ZONE_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            values = list(row)
            values[_GEOMETRY] = Jsonb(values[_GEOMETRY])
            values[_SCHEDULE] = None if values[_SCHEDULE] is None else Jsonb(values[_SCHEDULE])
            copy.write_row(values)
    return len(rows)


def analyze_catalogue(conn: psycopg.Connection[Any]) -> None:
    """Planner statistics after the bulk load, as autovacuum would leave them."""
    conn.execute("ANALYZE zones")
    conn.execute("ANALYZE subjects")


def set_groups(conn: psycopg.Connection[Any], subject_id: int, groups: Sequence[str]) -> None:
    """A subject moved into groups (its revision moves, as with an edit in the console)."""
    conn.execute("UPDATE subjects SET groups = %s WHERE id = %s", (list(groups), subject_id))


def alerts_of(conn: psycopg.Connection[Any], subject_id: int, kind: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM alerts WHERE subject_id = %s AND type = %s", (subject_id, kind)
    ).fetchone()
    return int(row[0]) if row else 0
