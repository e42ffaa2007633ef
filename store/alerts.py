"""Alerts as the API reads them, the scope check before an operator's action, and the action's
own statements (lock, acknowledge, resolve, notes: the rules are alerts.lifecycle's).

The engine's own writes (open, update, clear, history, outbox) are not here: they belong to the
engine's repository, which operator actions call for history and outbox rows.

Region scope: an alert is in its subject's current region (the alert's own ``region_id`` only
when it has no subject). ``regions`` is the caller's regions (None: all);
``victims`` whether the caller may read victims' data (else alerts about a victim subject are
out of scope, like another region's).

The severity order is defined once, in ``alerts.vocabulary.SEVERITY_RANK``; ``severity_rank``
writes the SQL expression of it, so the queue's order and its cursor can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from tagwatch.alerts.vocabulary import SEVERITY_RANK
from tagwatch.store.fix_columns import as_read


def severity_rank(column: str) -> str:
    """A SQL expression of ``column``'s rank in SEVERITY_RANK (an unknown severity ranks 0)."""
    whens = " ".join(
        f"WHEN '{name}' THEN {rank}"
        for name, rank in sorted(SEVERITY_RANK.items(), key=lambda kv: -kv[1])
        if rank
    )
    return f"(CASE {column} {whens} ELSE 0 END)"


ALERT_REGION = "COALESCE(s.region_id, a.region_id)"
SCOPED = (
    " FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id"
    " LEFT JOIN zones z ON z.id = a.zone_id"
    f" WHERE (%(regions)s::text[] IS NULL OR {ALERT_REGION} = ANY(%(regions)s::text[]))"
    " AND (%(victims)s OR s.victim IS NOT TRUE)"
)
RANK = severity_rank("a.severity")
# protected_victim: the victim the alert's zone protects (never shown; it decides redaction)
SUMMARY_COLUMNS = (
    "a.id, a.subject_id, a.device_id, a.zone_id, a.region_id, a.type, a.severity, a.status,"
    " a.opened_at, a.raised_at, a.updated_at, a.first_fix_at, a.last_fix_at, a.cleared_at,"
    " a.late, a.escalated, a.fix_count, a.worst_distance_m, a.acknowledged_at,"
    " a.acknowledged_by, a.resolved_at, a.resolved_by, a.outcome, a.details, a.ack_escalated_at,"
    " COALESCE(z.victim_subject_id, z.protects_subject_id) AS protected_victim"
)
# The fixes of the devices the subject held as offender, in [start, end]: one probe per held
# device, kept apart by OFFSET 0 as store/fixes.HELD_FIXES_IN_WINDOW (a join may be planned as a
# hash join that decompresses whole compressed chunks, every device's).
HELD_FIXES = (
    "SELECT f.device_id, f.ts, f.lat, f.lon, f.acc, f.spd, f.hdg, f.batt, f.src, f.seq"
    " FROM device_assignments da CROSS JOIN LATERAL ("
    f"   SELECT {as_read('x')} FROM fixes x WHERE x.device_id = da.device_id"
    "   AND x.ts >= %(start)s AND x.ts <= %(end)s"
    "   AND x.ts >= lower(da.during) AND (upper_inf(da.during) OR x.ts < upper(da.during))"
    "   OFFSET 0"
    " ) f"
    " WHERE da.subject_id = %(subject)s AND da.role = 'offender'"
)


async def queue(
    conn: AsyncConnection[Any],
    *,
    regions: Sequence[str] | None,
    victims: bool,
    status: Sequence[str] | None,
    types: Sequence[str] | None,
    severity: Sequence[str] | None,
    subject_id: int | None,
    region: str | None,
    opened_from: datetime | None,
    opened_to: datetime | None,
    after: tuple[int, datetime, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Most severe first, then oldest first; ``after`` is the (rank, opened_at, id) of the last
    row of the previous page."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {SUMMARY_COLUMNS} {SCOPED}"
        " AND (%(status)s::text[] IS NULL OR a.status = ANY(%(status)s::text[]))"
        " AND (%(type)s::text[] IS NULL OR a.type = ANY(%(type)s::text[]))"
        " AND (%(severity)s::text[] IS NULL OR a.severity = ANY(%(severity)s::text[]))"
        " AND (%(subject)s::bigint IS NULL OR a.subject_id = %(subject)s)"
        f" AND (%(region)s::text IS NULL OR {ALERT_REGION} = %(region)s)"
        " AND (%(from)s::timestamptz IS NULL OR a.opened_at >= %(from)s)"
        " AND (%(to)s::timestamptz IS NULL OR a.opened_at < %(to)s)"
        f" AND (%(c_rank)s::int IS NULL OR {RANK} < %(c_rank)s OR ({RANK} = %(c_rank)s"
        " AND (a.opened_at, a.id) > (%(c_at)s::timestamptz, %(c_id)s::bigint)))"
        f" ORDER BY {RANK} DESC, a.opened_at, a.id LIMIT %(limit)s",
        {
            "regions": regions,
            "victims": victims,
            "status": status,
            "type": types,
            "severity": severity,
            "subject": subject_id,
            "region": region,
            "from": opened_from,
            "to": opened_to,
            "c_rank": after[0] if after else None,
            "c_at": after[1] if after else None,
            "c_id": after[2] if after else None,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def alert_detail(
    conn: AsyncConnection[Any], alert_id: int, regions: Sequence[str] | None, victims: bool
) -> dict[str, Any] | None:
    """The summary's columns and lat, lon, resolution_note; None when out of scope."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {SUMMARY_COLUMNS}, a.lat, a.lon, a.resolution_note {SCOPED} AND a.id = %(id)s",
        {"regions": regions, "victims": victims, "id": alert_id},
    )
    return await cur.fetchone()


async def held_fixes(
    conn: AsyncConnection[Any], subject_id: int, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """The fixes of the devices the subject held as offender in [start, end]: the latest
    ``limit``, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT * FROM ({HELD_FIXES} ORDER BY f.ts DESC LIMIT %(limit)s) latest ORDER BY ts",
        {"subject": subject_id, "start": start, "end": end, "limit": limit},
    )
    return await cur.fetchall()


async def history(conn: AsyncConnection[Any], alert_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, at, actor, action, detail FROM alert_history WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )
    return await cur.fetchall()


async def notes(conn: AsyncConnection[Any], alert_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, alert_id, at, author, body FROM alert_notes WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )
    return await cur.fetchall()


def note(conn: psycopg.Connection[Any], note_id: int) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT id, alert_id, at, author, body FROM alert_notes WHERE id = %s", (note_id,))
    return cur.fetchone()


def alert_in_scope(
    conn: psycopg.Connection[Any], alert_id: int, regions: Sequence[str] | None, victims: bool
) -> bool:
    """Checked in the operator action's own transaction, before the action."""
    row = conn.execute(
        f"SELECT a.id {SCOPED} AND a.id = %(id)s",
        {"regions": regions, "victims": victims, "id": alert_id},
    ).fetchone()
    return row is not None


def subject_in_scope(
    conn: psycopg.Connection[Any], subject_id: int, regions: Sequence[str] | None, victims: bool
) -> bool:
    """Whether the subject exists within ``regions`` (and is not a victim the caller may not
    read), in the operator action's own transaction."""
    row = conn.execute(
        "SELECT id FROM subjects WHERE id = %s"
        " AND (%s::text[] IS NULL OR region_id = ANY(%s::text[])) AND (%s OR NOT victim)",
        (subject_id, regions, regions, victims),
    ).fetchone()
    return row is not None


# ------------------------------------------------------------------ the outbox, for the live feed

# One page of the outbox after the cursor (and the ids still missing below it). Every row is
# returned so that the cursor moves past other regions' events, but only ``visible`` rows carry
# their content: the region filter is in the SQL.
PAGE = """
SELECT o.id, visible,
       CASE WHEN visible THEN o.created_at END AS created_at,
       CASE WHEN visible THEN o.event END AS event,
       CASE WHEN visible THEN o.alert_id END AS alert_id,
       CASE WHEN visible THEN o.payload END AS payload
FROM outbox o
JOIN alerts a ON a.id = o.alert_id
LEFT JOIN subjects s ON s.id = a.subject_id
CROSS JOIN LATERAL (SELECT (%(regions)s::text[] IS NULL
    OR COALESCE(s.region_id, a.region_id) = ANY(%(regions)s::text[])) AS visible) v
WHERE o.id > %(after)s OR o.id = ANY(%(gaps)s::bigint[])
ORDER BY o.id
LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    visible: bool
    created_at: datetime | None
    event: str | None
    alert_id: int | None
    payload: dict[str, Any] | None


async def outbox_head(conn: AsyncConnection[Any]) -> int:
    """The newest outbox id (0 when empty)."""
    row = await (await conn.execute("SELECT COALESCE(max(id), 0) FROM outbox")).fetchone()
    assert row is not None
    return int(row[0])


async def outbox_missing(conn: AsyncConnection[Any], after: int, lookback: int) -> list[int]:
    """The ids in the ``lookback`` below ``after`` (inclusive) that are not in the outbox (yet)."""
    rows = await (
        await conn.execute(
            "SELECT g FROM generate_series(GREATEST(%s - %s, 1), %s) g"
            " WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE id = g)",
            (after + 1, lookback, after),
        )
    ).fetchall()
    return [int(r[0]) for r in rows]


async def outbox_page(
    conn: AsyncConnection[Any],
    regions: Sequence[str] | None,
    after: int,
    gaps: Sequence[int],
    limit: int,
) -> list[OutboxEvent]:
    cur = conn.cursor(row_factory=class_row(OutboxEvent))
    await cur.execute(
        PAGE, {"regions": regions, "after": after, "gaps": list(gaps), "limit": limit}
    )
    return await cur.fetchall()


# -- synchronous: what the platform raised, for scenario scoring and the alert benchmark -----


@dataclass(frozen=True, slots=True)
class RaisedRow:
    id: int
    type: str
    subject_id: int
    opened_at: datetime
    late: bool | None
    first_fix_at: datetime | None


def raised_for(
    conn: psycopg.Connection[Any], subject_ids: Sequence[int], until: float
) -> list[RaisedRow]:
    """The subjects' alerts opened by ``until`` (epoch seconds), oldest first."""
    cur = conn.cursor(row_factory=class_row(RaisedRow))
    cur.execute(
        "SELECT id, type, subject_id, opened_at, late, first_fix_at FROM alerts"
        " WHERE subject_id = ANY(%s) AND opened_at <= to_timestamp(%s) ORDER BY id",
        (list(subject_ids), until),
    )
    return cur.fetchall()


@dataclass(frozen=True, slots=True)
class AlertTimes:
    subject_id: int
    id: int
    opened_at: float  # epoch seconds
    raised_at: float


def alert_times(
    conn: psycopg.Connection[Any], subject_ids: Sequence[int], alert_type: str
) -> list[AlertTimes]:
    """When the subjects' alerts of ``alert_type`` were opened (their fix's time) and raised."""
    cur = conn.cursor(row_factory=class_row(AlertTimes))
    cur.execute(
        "SELECT subject_id, id, extract(epoch FROM opened_at)::float8 AS opened_at,"
        " extract(epoch FROM raised_at)::float8 AS raised_at FROM alerts"
        " WHERE subject_id = ANY(%s) AND type = %s",
        (list(subject_ids), alert_type),
    )
    return cur.fetchall()


# ------------------------------------------------------------------ operator actions (lifecycle)
#
# Synchronous, on the connection and in the transaction of alerts.lifecycle: the action locks
# the alert, checks its status and changes it in one transaction, with the engine's history and
# outbox writes (store.engine_repository) beside these.


@dataclass(frozen=True, slots=True)
class LockedAlert:
    """What an operator action checks before it changes an alert."""

    alert_id: int
    type: str
    severity: str
    status: str
    region_id: str | None
    acknowledged_by: str | None


@dataclass(frozen=True, slots=True)
class LifecycleFields:
    """An alert's lifecycle columns, as an action answers with them."""

    alert_id: int
    type: str
    status: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: str | None


def lock_alert(conn: psycopg.Connection[Any], alert_id: int) -> LockedAlert | None:
    """The alert, locked ``FOR UPDATE`` until the transaction ends, so that two operators acting
    on it are serialised and the second sees the first's result; None when it does not exist."""
    cur = conn.cursor(row_factory=class_row(LockedAlert))
    cur.execute(
        "SELECT id AS alert_id, type, severity, status, region_id, acknowledged_by FROM alerts"
        " WHERE id = %s FOR UPDATE",
        (alert_id,),
    )
    return cur.fetchone()


def lifecycle_fields(conn: psycopg.Connection[Any], alert_id: int) -> LifecycleFields | None:
    cur = conn.cursor(row_factory=class_row(LifecycleFields))
    cur.execute(
        "SELECT id AS alert_id, type, status, acknowledged_at, acknowledged_by, resolved_at,"
        " resolved_by, outcome FROM alerts WHERE id = %s",
        (alert_id,),
    )
    return cur.fetchone()


def set_acknowledged(conn: psycopg.Connection[Any], alert_id: int, actor: str) -> None:
    """``actor`` took the alert now (the transaction's time, like every change of one action)."""
    conn.execute(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(),"
        " acknowledged_by = %s, updated_at = now() WHERE id = %s",
        (actor, alert_id),
    )


def set_resolved(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, outcome: str, note: str | None
) -> None:
    """``actor`` closed the alert now with ``outcome``; ``note`` is the resolution's."""
    conn.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = now(), resolved_by = %s,"
        " outcome = %s, resolution_note = %s, updated_at = now() WHERE id = %s",
        (actor, outcome, note, alert_id),
    )


def touch(conn: psycopg.Connection[Any], alert_id: int) -> None:
    """The alert changed without a status change (a note): ``updated_at`` says so."""
    conn.execute("UPDATE alerts SET updated_at = now() WHERE id = %s", (alert_id,))


def add_note(conn: psycopg.Connection[Any], alert_id: int, author: str, body: str) -> int:
    """A note on the alert, timed by the database; its id."""
    row = conn.execute(
        "INSERT INTO alert_notes (alert_id, author, body) VALUES (%s, %s, %s) RETURNING id",
        (alert_id, author, body),
    ).fetchone()
    assert row is not None
    return int(row[0])


def lock_open_alert_of_type(
    conn: psycopg.Connection[Any], subject_id: int, alert_type: str
) -> int | None:
    """The newest alert of ``alert_type`` of the subject that is neither resolved nor cleared,
    locked ``FOR UPDATE``; None when there is none."""
    row = conn.execute(
        "SELECT id FROM alerts WHERE subject_id = %s AND type = %s AND status <> 'resolved'"
        " AND cleared_at IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE",
        (subject_id, alert_type),
    ).fetchone()
    return None if row is None else int(row[0])


def lock_subject(conn: psycopg.Connection[Any], subject_id: int) -> bool:
    """Serialise absconder declarations for one subject; False when it does not exist.
    ``FOR NO KEY UPDATE`` leaves alone the foreign-key share locks that inserting the subject's
    alerts takes."""
    row = conn.execute(
        "SELECT id FROM subjects WHERE id = %s FOR NO KEY UPDATE", (subject_id,)
    ).fetchone()
    return row is not None
