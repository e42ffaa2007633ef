"""Absconder cases (migrations 0022, 0023): opened with every absconder alert, worked by tracing
units, counted by the monthly absconder template.

Opening (`open_for_alert`) is synchronous and runs in the absconder alert's own transaction: the
engine's repository calls it right after the alert's outbox row (so the alert's ``routing``, the
tracing unit where the subject is, is decided), and an operator's declaration calls it again for
the alert it names (idempotent). A subject has at most one outstanding case: a second absconder
alert while one is outstanding joins it (its last known position and trail replace the case's).

Scope: ``scope`` is the caller's regions, or None for every region. A case is in scope when its
region (the subject's home region when it opened) or its subject's current region is; a victim
subject's case only for callers who may read victims. A tracer also reaches, cross-region, the
cases his tracing unit holds an active grant for (``unit``): the grant is kept by a trigger
(migration 0023), starts when the case is routed or assigned to the unit and ends when it is
reassigned or closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

# The alert an absconder escalated from, as the template counts it.
CAUSES: dict[str, str] = {
    "strap_tamper": "strap_tamper",
    "no_communication": "silence",
    "inclusion_zone_exit": "inclusion_exit",
}
OUTCOMES = ("returned_to_supervision", "arrested", "deceased", "other")
STATUSES = ("outstanding", "traced", "closed")


def cause_of(details: Mapping[str, Any] | None) -> str:
    """The case's cause from the absconder alert's details: the alert it escalated from, or an
    operator's declaration (also when the details say neither: someone declares it now)."""
    details = details or {}
    source = details.get("escalated_from")
    if details.get("declared_by") is None and isinstance(source, str) and source in CAUSES:
        return CAUSES[source]
    return "declared"


def _unit_of(routing: Mapping[str, Any] | None) -> int | None:
    """The first tracing unit the alert was routed to (store/places.route_alert), if any."""
    units = (routing or {}).get("tracing_units") or []
    for unit in units:
        if isinstance(unit, Mapping) and isinstance(unit.get("id"), int):
            return int(unit["id"])
    return None


@dataclass(frozen=True, slots=True)
class Opened:
    case_id: int
    joined: bool  # the alert joined the subject's outstanding case


def open_for_alert(
    conn: psycopg.Connection[Any], alert_id: int, actor: str = "engine"
) -> Opened | None:
    """The case of absconder alert ``alert_id``: the one it already belongs to, else the
    subject's outstanding case (joined), else a new one. None when the alert is not an
    absconder of a subject."""
    known = conn.execute(
        "SELECT case_id FROM absconder_case_alerts WHERE alert_id = %s", (alert_id,)
    ).fetchone()
    if known is not None:
        return Opened(int(known[0]), joined=False)
    row = conn.execute(
        "SELECT a.subject_id, s.region_id, a.opened_at, a.details, a.routing"
        " FROM alerts a JOIN subjects s ON s.id = a.subject_id"
        " WHERE a.id = %s AND a.type = 'absconder'",
        (alert_id,),
    ).fetchone()
    if row is None:
        return None
    subject_id, region_id, opened_at, details, routing = row
    details = details or {}
    last_known = details.get("last_known")
    trail = details.get("trail") or []
    created = conn.execute(
        "INSERT INTO absconder_cases (subject_id, region_id, alert_id, cause, opened_at,"
        " tracing_unit_id, last_known, trail, changed_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (subject_id) WHERE status = 'outstanding' DO NOTHING RETURNING id",
        (
            subject_id,
            region_id,
            alert_id,
            cause_of(details),
            opened_at,
            _unit_of(routing),
            None if last_known is None else Jsonb(last_known),
            Jsonb(trail),
            actor,
        ),
    ).fetchone()
    joined = created is None
    if created is None:
        # the outstanding case takes the newer position; a unit only if it had none
        created = conn.execute(
            "UPDATE absconder_cases SET last_known = COALESCE(%s, last_known),"
            " trail = CASE WHEN jsonb_array_length(%s::jsonb) > 0 THEN %s::jsonb ELSE trail END,"
            " tracing_unit_id = COALESCE(tracing_unit_id, %s), changed_by = %s,"
            " updated_at = now() WHERE subject_id = %s AND status = 'outstanding' RETURNING id",
            (
                None if last_known is None else Jsonb(last_known),
                Jsonb(trail),
                Jsonb(trail),
                _unit_of(routing),
                actor,
                subject_id,
            ),
        ).fetchone()
        assert created is not None
    conn.execute(
        "INSERT INTO absconder_case_alerts (alert_id, case_id) VALUES (%s, %s)",
        (alert_id, created[0]),
    )
    return Opened(int(created[0]), joined)


# ------------------------------------------------------------------ reads


@dataclass(frozen=True, slots=True)
class CaseRow:
    id: int
    subject_id: int
    subject_name: str
    region_id: str
    alert_id: int | None
    cause: str
    opened_at: datetime
    status: str
    outcome: str | None
    traced_at: datetime | None
    closed_at: datetime | None
    tracing_unit_id: int | None
    tracing_unit_name: str | None
    officer: str | None
    police_case_number: str | None
    warrant_number: str | None
    last_known: dict[str, Any] | None
    trail: list[dict[str, Any]]
    has_photo: bool
    updated_at: datetime
    via_grant: int | None  # the grant the caller reaches the case by (None: by region)


_SELECT = (
    "SELECT c.id, c.subject_id, s.name AS subject_name, c.region_id, c.alert_id, c.cause,"
    " c.opened_at, c.status, c.outcome, c.traced_at, c.closed_at, c.tracing_unit_id,"
    " u.name AS tracing_unit_name, c.officer, c.police_case_number, c.warrant_number,"
    " c.last_known, c.trail,"
    " EXISTS (SELECT 1 FROM subject_photos p WHERE p.subject_id = c.subject_id) AS has_photo,"
    " c.updated_at, CASE WHEN %(scope)s::text[] IS NULL"
    " OR c.region_id = ANY(%(scope)s::text[]) OR s.region_id = ANY(%(scope)s::text[])"
    " THEN NULL ELSE g.id END AS via_grant"
    " FROM absconder_cases c JOIN subjects s ON s.id = c.subject_id"
    " LEFT JOIN tracing_units u ON u.id = c.tracing_unit_id"
    " LEFT JOIN absconder_case_grants g ON g.case_id = c.id AND g.revoked_at IS NULL"
    " AND g.tracing_unit_id = %(unit)s::bigint"
)
# In scope by region, or by the caller's unit's active grant (``unit`` is only ever given for
# tracers); a victim subject's case only for those who may read victims.
_VISIBLE = (
    " (%(scope)s::text[] IS NULL OR c.region_id = ANY(%(scope)s::text[])"
    " OR s.region_id = ANY(%(scope)s::text[]) OR g.id IS NOT NULL)"
    " AND (%(victims)s OR NOT s.victim)"
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Who is asking: regions (None: all), whether victims' data is theirs, and the tracing unit
    whose grants count (tracers only)."""

    regions: Sequence[str] | None
    victims: bool
    unit: int | None


def _params(scope: Scope) -> dict[str, Any]:
    return {
        "scope": None if scope.regions is None else list(scope.regions),
        "victims": scope.victims,
        "unit": scope.unit,
    }


async def list_cases(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    status: Sequence[str] | None,
    region: str | None,
    unit: int | None,
    after_id: int,
    limit: int,
) -> list[CaseRow]:
    cur = conn.cursor(row_factory=class_row(CaseRow))
    await cur.execute(
        _SELECT + " WHERE c.id > %(after)s AND" + _VISIBLE
        + " AND (%(status)s::text[] IS NULL OR c.status = ANY(%(status)s::text[]))"
        " AND (%(region)s::text IS NULL OR c.region_id = %(region)s)"
        " AND (%(by_unit)s::bigint IS NULL OR c.tracing_unit_id = %(by_unit)s)"
        " ORDER BY c.id LIMIT %(limit)s",
        {**_params(scope), "after": after_id, "status": None if not status else list(status),
         "region": region, "by_unit": unit, "limit": limit},
    )  # fmt: skip
    return await cur.fetchall()


async def case_in_scope(
    conn: AsyncConnection[Any], case_id: int, scope: Scope, *, for_update: bool = False
) -> CaseRow | None:
    cur = conn.cursor(row_factory=class_row(CaseRow))
    lock = " FOR UPDATE OF c" if for_update else ""
    await cur.execute(
        _SELECT + " WHERE c.id = %(id)s AND" + _VISIBLE + lock, {**_params(scope), "id": case_id}
    )
    return await cur.fetchone()


async def attempts(conn: AsyncConnection[Any], case_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, at, place, lon, lat, method, outcome, by_username, created_at"
        " FROM absconder_case_attempts WHERE case_id = %s ORDER BY at, id",
        (case_id,),
    )
    return await cur.fetchall()


async def case_alerts(conn: AsyncConnection[Any], case_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT a.id, a.type, a.status, a.opened_at,"
        " a.details->>'escalated_from' AS escalated_from, l.joined_at"
        " FROM absconder_case_alerts l JOIN alerts a ON a.id = l.alert_id"
        " WHERE l.case_id = %s ORDER BY a.id",
        (case_id,),
    )
    return await cur.fetchall()


async def grants(conn: AsyncConnection[Any], case_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT g.id, g.tracing_unit_id, u.name AS tracing_unit_name, g.unit_region_id,"
        " g.granted_at, g.granted_by, g.revoked_at, g.revoked_by, g.revoke_reason"
        " FROM absconder_case_grants g LEFT JOIN tracing_units u ON u.id = g.tracing_unit_id"
        " WHERE g.case_id = %s ORDER BY g.id",
        (case_id,),
    )
    return await cur.fetchall()


async def active_grant(conn: AsyncConnection[Any], case_id: int) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, tracing_unit_id, unit_region_id, case_region_id, granted_at, granted_by"
        " FROM absconder_case_grants WHERE case_id = %s AND revoked_at IS NULL",
        (case_id,),
    )
    return await cur.fetchone()


async def unit_exists(conn: AsyncConnection[Any], unit_id: int) -> str | None:
    """The unit's region, or None when there is no such unit."""
    row = await (
        await conn.execute("SELECT region_id FROM tracing_units WHERE id = %s", (unit_id,))
    ).fetchone()
    return None if row is None else str(row[0])


# ------------------------------------------------------------------ changes

_EDITABLE = ("tracing_unit_id", "officer", "police_case_number", "warrant_number")


async def update_case(
    conn: AsyncConnection[Any], case_id: int, changes: Mapping[str, Any], actor: str
) -> None:
    """Set the given fields (a None value clears one); the grant trigger follows the unit."""
    fields = [name for name in _EDITABLE if name in changes]
    if not fields:
        return
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    await conn.execute(
        f"UPDATE absconder_cases SET {assignments}, changed_by = %(actor)s, updated_at = now()"
        " WHERE id = %(id)s",
        {**{name: changes[name] for name in fields}, "actor": actor, "id": case_id},
    )


async def add_attempt(
    conn: AsyncConnection[Any],
    case_id: int,
    *,
    at: datetime,
    place: str | None,
    lon: float | None,
    lat: float | None,
    method: str,
    outcome: str,
    by: str,
) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO absconder_case_attempts (case_id, at, place, lon, lat, method, outcome,"
        " by_username) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, at, place, lon, lat, method, outcome, by_username, created_at",
        (case_id, at, place, lon, lat, method, outcome, by),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute("UPDATE absconder_cases SET updated_at = now() WHERE id = %s", (case_id,))
    return row


async def mark_traced(
    conn: AsyncConnection[Any], case_id: int, outcome: str, traced_at: datetime, actor: str
) -> None:
    await conn.execute(
        "UPDATE absconder_cases SET status = 'traced', outcome = %s, traced_at = %s,"
        " changed_by = %s, updated_at = now() WHERE id = %s AND status = 'outstanding'",
        (outcome, traced_at, actor, case_id),
    )


async def close(conn: AsyncConnection[Any], case_id: int, closed_at: datetime, actor: str) -> None:
    await conn.execute(
        "UPDATE absconder_cases SET status = 'closed', closed_at = %s, changed_by = %s,"
        " updated_at = now() WHERE id = %s AND status = 'traced'",
        (closed_at, actor, case_id),
    )


# ------------------------------------------------------------------ photos


@dataclass(frozen=True, slots=True)
class Photo:
    content_type: str
    data: bytes
    updated_at: datetime


async def photo(conn: AsyncConnection[Any], subject_id: int) -> Photo | None:
    cur = conn.cursor(row_factory=class_row(Photo))
    await cur.execute(
        "SELECT content_type, data, updated_at FROM subject_photos WHERE subject_id = %s",
        (subject_id,),
    )
    return await cur.fetchone()


async def put_photo(
    conn: AsyncConnection[Any], subject_id: int, content_type: str, data: bytes
) -> datetime:
    row = await (
        await conn.execute(
            "INSERT INTO subject_photos (subject_id, content_type, data) VALUES (%s, %s, %s)"
            " ON CONFLICT (subject_id) DO UPDATE SET content_type = excluded.content_type,"
            " data = excluded.data, updated_at = now() RETURNING updated_at",
            (subject_id, content_type, data),
        )
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]
