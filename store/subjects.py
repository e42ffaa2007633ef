"""Subjects and regions: the SQL of the people monitored and the areas that scope who sees them.

Every read takes the caller's scope as plain values (``regions``: the caller's regions, or None
for all; ``victims``: whether the caller may read victims' data), so the region and victim checks
stay in SQL, where a row outside the scope is never fetched, and this module needs nothing from
the API's notion of a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row

SUBJECT_COLUMNS = (
    "id, name, case_ref, region_id, timezone, groups, created_at, victim,"
    " home_beacon, home_beacon_approved_by, home_beacon_approved_at"
)


@dataclass(frozen=True, slots=True)
class Region:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Subject:
    id: int
    name: str
    case_ref: str | None
    region_id: str
    timezone: str
    groups: list[str]
    created_at: datetime
    victim: bool
    # The approved home beacon (migration 0019): its id, who approved it and when, or all None.
    home_beacon: str | None = None
    home_beacon_approved_by: str | None = None
    home_beacon_approved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RegionStay:
    region_id: str
    from_: datetime | None
    to: datetime | None
    changed_by: str | None


async def list_regions(conn: AsyncConnection[Any], regions: Sequence[str] | None) -> list[Region]:
    cur = conn.cursor(row_factory=class_row(Region))
    await cur.execute(
        "SELECT id, name FROM regions WHERE %s::text[] IS NULL OR id = ANY(%s::text[]) ORDER BY id",
        (regions, regions),
    )
    return await cur.fetchall()


async def create_region(conn: AsyncConnection[Any], region_id: str, name: str) -> None:
    """Raises UniqueViolation if the id exists."""
    await conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region_id, name))


async def unknown_regions(conn: AsyncConnection[Any], region_ids: Sequence[str]) -> list[str]:
    """Those of ``region_ids`` that name no region, sorted."""
    row = await (
        await conn.execute(
            "SELECT array_agg(x ORDER BY x) FROM unnest(%s::text[]) x"
            " WHERE NOT EXISTS (SELECT 1 FROM regions r WHERE r.id = x)",
            (list(region_ids),),
        )
    ).fetchone()
    return list(row[0]) if row and row[0] else []


async def subject_in_scope(
    conn: AsyncConnection[Any], subject_id: int, regions: Sequence[str] | None, victims: bool
) -> Subject | None:
    """The subject, or None whether it is missing, outside ``regions``, or a victim that the
    caller may not read (the same answer, so that its existence elsewhere does not leak)."""
    cur = conn.cursor(row_factory=class_row(Subject))
    await cur.execute(
        f"SELECT {SUBJECT_COLUMNS}"
        " FROM subjects WHERE id = %s AND (%s::text[] IS NULL OR region_id = ANY(%s::text[]))"
        " AND (%s OR NOT victim)",
        (subject_id, regions, regions, victims),
    )
    return await cur.fetchone()


async def list_subjects(
    conn: AsyncConnection[Any],
    *,
    regions: Sequence[str] | None,
    victims: bool,
    region: str | None,
    after_id: int,
    limit: int,
) -> list[Subject]:
    cur = conn.cursor(row_factory=class_row(Subject))
    await cur.execute(
        f"SELECT {SUBJECT_COLUMNS} FROM subjects "
        "WHERE id > %s AND (%s::text[] IS NULL OR region_id = ANY(%s::text[])) "
        "AND (%s::text IS NULL OR region_id = %s) AND (%s OR NOT victim) ORDER BY id LIMIT %s",
        (after_id, regions, regions, region, region, victims, limit),
    )
    return await cur.fetchall()


async def create_subject(
    conn: AsyncConnection[Any],
    *,
    name: str,
    case_ref: str | None,
    region_id: str,
    timezone: str,
    groups: Sequence[str],
    victim: bool,
) -> Subject:
    """Raises ForeignKeyViolation for an unknown region, UniqueViolation for a case_ref already
    used in the region."""
    cur = conn.cursor(row_factory=class_row(Subject))
    await cur.execute(
        "INSERT INTO subjects (name, case_ref, region_id, timezone, groups, victim) "
        f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {SUBJECT_COLUMNS}",
        (name, case_ref, region_id, timezone, list(groups), victim),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_subject(
    conn: AsyncConnection[Any], subject_id: int, changes: Mapping[str, Any], actor: str
) -> Subject:
    """Apply ``changes`` (column -> value; the columns come from the API's validated update
    model, never from the client's keys) as ``actor``, whom the region-history trigger records
    (``tagwatch.actor``, local to the transaction). Raises ForeignKeyViolation for an unknown
    region."""
    await conn.execute("SELECT set_config('tagwatch.actor', %s, true)", (actor,))
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    cur = conn.cursor(row_factory=class_row(Subject))
    await cur.execute(
        f"UPDATE subjects SET {assignments} WHERE id = %(id)s RETURNING {SUBJECT_COLUMNS}",
        {**changes, "id": subject_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def set_home_beacon(
    conn: AsyncConnection[Any], subject_id: int, beacon: str | None, actor: str
) -> Subject:
    """Approve ``beacon`` as the subject's home beacon as ``actor`` (now), or clear the
    approval (None). Setting the same id again keeps the first approval: nothing changed."""
    cur = conn.cursor(row_factory=class_row(Subject))
    await cur.execute(
        _SET_HOME_BEACON + f" RETURNING {SUBJECT_COLUMNS}",
        _beacon_params(subject_id, beacon, actor),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


_SET_HOME_BEACON = (
    "UPDATE subjects SET home_beacon = %(beacon)s,"
    " home_beacon_approved_by = CASE WHEN %(beacon)s::text IS NULL THEN NULL"
    " WHEN home_beacon IS NOT DISTINCT FROM %(beacon)s THEN home_beacon_approved_by"
    " ELSE %(actor)s END,"
    " home_beacon_approved_at = CASE WHEN %(beacon)s::text IS NULL THEN NULL"
    " WHEN home_beacon IS NOT DISTINCT FROM %(beacon)s THEN home_beacon_approved_at"
    " ELSE now() END"
    " WHERE id = %(id)s"
)


def _beacon_params(subject_id: int, beacon: str | None, actor: str) -> dict[str, Any]:
    return {"id": subject_id, "beacon": beacon, "actor": actor}


async def region_history(conn: AsyncConnection[Any], subject_id: int) -> list[RegionStay]:
    """Where the subject was monitored, oldest first."""
    cur = conn.cursor(row_factory=class_row(RegionStay))
    await cur.execute(
        "SELECT region_id, lower(during) AS from_, upper(during) AS to, changed_by"
        " FROM subject_regions WHERE subject_id = %s ORDER BY lower(during) NULLS FIRST",
        (subject_id,),
    )
    return await cur.fetchall()


# -- synchronous: provisioning by the CLI, the simulators and the benchmarks ----------------


def ensure_region(conn: psycopg.Connection[Any], region_id: str, name: str) -> None:
    """The region, unless it exists (then its name is left as it is)."""
    conn.execute(
        "INSERT INTO regions (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (region_id, name)
    )


def add_subject(
    conn: psycopg.Connection[Any],
    *,
    name: str,
    region_id: str,
    case_ref: str | None = None,
    timezone: str = "UTC",  # the schema's default
    groups: Sequence[str] = (),
) -> int:
    """The new subject's id. Raises ForeignKeyViolation for an unknown region, UniqueViolation
    for a case_ref already used."""
    row = conn.execute(
        "INSERT INTO subjects (name, case_ref, region_id, timezone, groups)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (name, case_ref, region_id, timezone, list(groups)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_namesakes(
    conn: psycopg.Connection[Any], case_refs: Sequence[str], region_id: str, timezone: str
) -> None:
    """Many subjects at once (COPY), each named after its case_ref, for loads and benchmarks
    (``store.devices.assign_to_namesakes`` then gives each the device of the same id)."""
    with (
        conn.cursor() as cur,
        cur.copy("COPY subjects (name, case_ref, region_id, timezone) FROM STDIN") as copy,
    ):
        for ref in case_refs:
            copy.write_row((ref, ref, region_id, timezone))


def ids_by_case_ref(conn: psycopg.Connection[Any], case_ref_like: str) -> dict[str, int]:
    """case_ref -> subject id, for the subjects whose case_ref is LIKE ``case_ref_like``."""
    rows = conn.execute(
        "SELECT case_ref, id FROM subjects WHERE case_ref LIKE %s", (case_ref_like,)
    ).fetchall()
    return {str(ref): int(sid) for ref, sid in rows}


def approve_home_beacon(
    conn: psycopg.Connection[Any], subject_id: int, beacon: str | None, actor: str
) -> bool:
    """`set_home_beacon` for the CLI and the simulators; False when no such subject."""
    cur = conn.execute(_SET_HOME_BEACON, _beacon_params(subject_id, beacon, actor))
    return cur.rowcount == 1


def home_beacon_approval(
    conn: psycopg.Connection[Any], subject_id: int
) -> tuple[str | None, str | None, datetime | None] | None:
    """(beacon, approved by, approved at) of the subject, all None when none is approved;
    None when there is no such subject."""
    row = conn.execute(
        "SELECT home_beacon, home_beacon_approved_by, home_beacon_approved_at FROM subjects"
        " WHERE id = %s",
        (subject_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def move_subject(conn: psycopg.Connection[Any], subject_id: int, region_id: str) -> None:
    """The subject is monitored in ``region_id`` from now on (a scenario's transfer; the
    region-history trigger records it without an actor)."""
    conn.execute(
        "UPDATE subjects SET region_id = %s, updated_at = now() WHERE id = %s",
        (region_id, subject_id),
    )
