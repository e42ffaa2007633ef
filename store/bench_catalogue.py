"""The SQL of `tagwatch bench cold-start`: a national catalogue (subjects and their zones) written
in bulk, and the probe alerts it waits for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tagwatch.store.subjects import ensure_region


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


ZONE_COLUMNS = (
    "name",
    "kind",
    "geometry",
    "radius_m",
    "buffer_m",
    "subject_id",
    "group_name",
    "region_id",
    "schedule",
)


def seed_zones(conn: psycopg.Connection[Any], rows: Sequence[Sequence[Any]]) -> int:
    """Zones by COPY, one tuple of ``ZONE_COLUMNS`` each (geometry and schedule as dicts)."""
    with conn.cursor().copy(f"COPY zones ({', '.join(ZONE_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            values = list(row)
            values[2] = Jsonb(values[2])
            values[8] = None if values[8] is None else Jsonb(values[8])
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
