"""The alert queue and what operators do with it; the rules are ``alerts.lifecycle``'s.

Region scope: an alert is in its subject's current region (the alert's own ``region_id``, the
region it was raised in, only when it has no subject), filtered in SQL; an alert outside the
caller's regions answers 404, the same as one that does not exist.

Roles (declared next to each route):

* read the queue and an alert's detail: admin, supervisor, operator, tracer;
* acknowledge, resolve, declare an absconder: admin, supervisor, operator. Tracing units are not
  the monitoring centre: they do not take or close alerts from its queue;
* add a note: every role, tracers included (what the tracing unit found is part of the record,
  also after resolution).

Victims' data (store/migrations/0013_victim_data.sql): an alert about a victim subject (which
the engine never raises: a victim's devices only move their zones) is hidden from operators and
tracers like one of another region; an alert of a zone protecting a victim is shown to everyone,
without what would locate the victim (see ``api.schemas_alerts``) except in the detail for
supervisors and admins, whose read of it is audited as a ``victim_zone`` read.

Refusals from the lifecycle answer with its status (404, 409, 422) and body
``{"detail": {"reason": ..., "message": ..., ...}}``.

The lifecycle functions are synchronous (they are shared with the engine's processes), so the
actions run on a worker thread with their own connection: the region check and the action are
one transaction.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime

from tagwatch.alerts import lifecycle
from tagwatch.alerts.lifecycle import LifecycleError
from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.schemas_alerts import (
    AbsconderBody,
    AcknowledgeBody,
    AlertDetail,
    AlertPage,
    AlertStatusName,
    AlertStatusPublic,
    AlertSummary,
    AlertTypeName,
    Declaration,
    HistoryEntry,
    NoteBody,
    NotePublic,
    ResolveBody,
    SeverityName,
    without_location,
    without_victim,
)
from tagwatch.api.security import CurrentUser, Role, User, allow

router = APIRouter(tags=["alerts"])
READ_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
ACT_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator")
NOTE_ROLES: tuple[Role, ...] = READ_ROLES

# Fixes shown with an alert: from before its first fix to after it cleared (or its last fix).
FIX_MARGIN = timedelta(minutes=10)
MAX_FIX_WINDOW = timedelta(hours=24)
MAX_FIXES = 5000

# The region an alert is in, for scoping and the ?region= filter.
ALERT_REGION = "COALESCE(s.region_id, a.region_id)"
# %(victims)s: whether the caller may read victims' data (alerts about a victim subject).
SCOPED = (
    " FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id"
    " LEFT JOIN zones z ON z.id = a.zone_id"
    f" WHERE (%(regions)s::text[] IS NULL OR {ALERT_REGION} = ANY(%(regions)s::text[]))"
    " AND (%(victims)s OR s.victim IS NOT TRUE)"
)
RANK = "(CASE a.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)"
SUMMARY_COLUMNS = (
    "a.id, a.subject_id, a.device_id, a.zone_id, a.region_id, a.type, a.severity, a.status,"
    " a.opened_at, a.raised_at, a.updated_at, a.first_fix_at, a.last_fix_at, a.cleared_at,"
    " a.late, a.escalated, a.fix_count, a.worst_distance_m, a.acknowledged_at,"
    " a.acknowledged_by, a.resolved_at, a.resolved_by, a.outcome, a.details,"
    " COALESCE(z.victim_subject_id, z.protects_subject_id)"
)
SUMMARY_FIELDS = (
    "id",
    "subject_id",
    "device_id",
    "zone_id",
    "region_id",
    "type",
    "severity",
    "status",
    "opened_at",
    "raised_at",
    "updated_at",
    "first_fix_at",
    "last_fix_at",
    "cleared_at",
    "late",
    "escalated",
    "fix_count",
    "worst_distance_m",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "outcome",
    "details",
    "protected_victim",  # the victim the alert's zone protects; not shown
)
HELD_FIXES = (
    "SELECT f.device_id, f.ts, f.lat, f.lon, f.acc, f.spd, f.hdg, f.batt, f.src, f.seq"
    " FROM device_assignments da JOIN fixes f ON f.device_id = da.device_id"
    " AND f.ts >= lower(da.during) AND (upper_inf(da.during) OR f.ts < upper(da.during))"
    " WHERE da.subject_id = %(subject)s AND da.role = 'offender'"
    " AND f.ts >= %(start)s AND f.ts <= %(end)s"
)

T = TypeVar("T")


def _fields(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(SUMMARY_FIELDS, row, strict=False))


def _redact(fields: dict[str, Any]) -> dict[str, Any]:
    """Without what would locate the victim the alert's zone protects (if it protects one)."""
    if fields.pop("protected_victim") is None:
        return fields
    return {
        **fields,
        "details": without_victim(fields["details"]),
        "worst_distance_m": None,
        "redacted": True,
    }


def _summary(row: tuple[Any, ...]) -> AlertSummary:
    fields = _redact(_fields(row))
    fields["details"] = without_location(fields["details"])
    return AlertSummary(**fields)


def _encode_cursor(row: tuple[Any, ...]) -> str:
    rank = {"critical": 2, "warning": 1}.get(row[6], 0)
    raw = json.dumps([rank, row[8].isoformat(), row[0]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, opened, alert_id = json.loads(raw)
        opened_at = datetime.fromisoformat(opened)
        if (
            not isinstance(rank, int)
            or not isinstance(alert_id, int)
            or opened_at.tzinfo is None
            or isinstance(rank, bool)
        ):
            raise ValueError(cursor)
        return rank, opened_at, alert_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise HTTPException(
            422, detail={"reason": "invalid_cursor", "message": "cursor is not one this API gave"}
        ) from exc


def _refused(exc: LifecycleError) -> HTTPException:
    return HTTPException(exc.status_code, detail=exc.as_detail())


async def _act(request: Request, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    """Run ``work`` on a worker thread in one transaction of its own connection."""
    url = request.app.state.settings.database_url_for("api")

    def run() -> T:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return work(conn)

    try:
        return await anyio.to_thread.run_sync(run)
    except LifecycleError as exc:
        raise _refused(exc) from exc


def _alert_in_scope(conn: psycopg.Connection[Any], user: User, alert_id: int) -> None:
    row = conn.execute(
        f"SELECT a.id {SCOPED} AND a.id = %(id)s",
        {"regions": user.region_filter(), "victims": may_read_victims(user), "id": alert_id},
    ).fetchone()
    if row is None:
        raise lifecycle.NotFound("not_found", f"alert {alert_id} does not exist", alert_id=alert_id)


def _status(result: lifecycle.AlertStatus) -> AlertStatusPublic:
    return AlertStatusPublic(
        alert_id=result.alert_id,
        type=result.type,
        status=result.status,  # type: ignore[arg-type]
        acknowledged_at=result.acknowledged_at,
        acknowledged_by=result.acknowledged_by,
        resolved_at=result.resolved_at,
        resolved_by=result.resolved_by,
        outcome=result.outcome,
        changed=result.changed,
    )


@router.get("/alerts", response_model=AlertPage, dependencies=[allow(*READ_ROLES)])
async def list_alerts(
    conn: Conn,
    user: CurrentUser,
    status_: list[AlertStatusName] | None = Query(default=None, alias="status"),
    type_: list[AlertTypeName] | None = Query(default=None, alias="type"),
    severity: list[SeverityName] | None = Query(default=None),
    subject_id: int | None = None,
    region: str | None = Query(default=None, max_length=64),
    opened_from: AwareDatetime | None = Query(default=None, description="opened at or after"),
    opened_to: AwareDatetime | None = Query(default=None, description="opened before"),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=200, description="next_cursor of a page"),
) -> AlertPage:
    """The queue: most severe first, then oldest first (the longest waiting). Filters repeat
    (``?status=open&status=acknowledged``) and combine."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await (
        await conn.execute(
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
                "regions": user.region_filter(),
                "victims": may_read_victims(user),
                "status": status_,
                "type": type_,
                "severity": severity,
                "subject": subject_id,
                "region": region,
                "from": opened_from,
                "to": opened_to,
                "c_rank": after[0] if after else None,
                "c_at": after[1] if after else None,
                "c_id": after[2] if after else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    page = [tuple(r) for r in rows[:limit]]
    return AlertPage(
        items=[_summary(r) for r in page],
        next_cursor=_encode_cursor(page[-1]) if len(rows) > limit else None,
    )


@router.get("/alerts/{alert_id}", response_model=AlertDetail, dependencies=[allow(*READ_ROLES)])
async def read_alert(
    alert_id: int,
    conn: Conn,
    user: CurrentUser,
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> AlertDetail:
    """The alert with its history, its notes and the subject's fixes around it (from 10 minutes
    before its first fix to 10 minutes after it cleared or its last fix; at most 24 hours and
    5000 fixes, the latest kept). A location read: written to the audit log."""
    row = await (
        await conn.execute(
            f"SELECT {SUMMARY_COLUMNS}, a.lat, a.lon, a.resolution_note {SCOPED} AND a.id = %(id)s",
            {"regions": user.region_filter(), "victims": may_read_victims(user), "id": alert_id},
        )
    ).fetchone()
    if row is None:
        raise _refused(
            lifecycle.NotFound("not_found", f"alert {alert_id} does not exist", alert_id=alert_id)
        )
    fields = _fields(tuple(row))
    victim = fields["protected_victim"]
    if may_read_victims(user):
        fields.pop("protected_victim")
    else:
        fields = _redact(fields)
    lat, lon, resolution_note = row[-3], row[-2], row[-1]
    begin = min(t for t in (fields["first_fix_at"], fields["opened_at"]) if t is not None)
    finish = max(
        t
        for t in (fields["cleared_at"], fields["last_fix_at"], fields["opened_at"])
        if t is not None
    )
    start, end = begin - FIX_MARGIN, finish + FIX_MARGIN
    start = max(start, end - MAX_FIX_WINDOW)
    subject_id = fields["subject_id"]
    await audit.record(
        conn,
        user,
        "alert_detail",
        subject_id,
        alert_id=alert_id,
        start=start.isoformat(),
        end=end.isoformat(),
        reason=reason,
    )
    if victim is not None and may_read_victims(user):
        await audit.record_victim_zones(
            conn, user, [(victim, fields["zone_id"])], via="alert", alert_id=alert_id
        )
    fixes: list[Any] = []
    if subject_id is not None:
        fixes = await (
            await conn.execute(
                f"SELECT * FROM ({HELD_FIXES} ORDER BY f.ts DESC LIMIT %(limit)s) latest"
                " ORDER BY ts",
                {"subject": subject_id, "start": start, "end": end, "limit": MAX_FIXES},
            )
        ).fetchall()
    history = await (
        await conn.execute(
            "SELECT id, at, actor, action, detail FROM alert_history WHERE alert_id = %s"
            " ORDER BY id",
            (alert_id,),
        )
    ).fetchall()
    notes = await (
        await conn.execute(
            "SELECT id, alert_id, at, author, body FROM alert_notes WHERE alert_id = %s"
            " ORDER BY id",
            (alert_id,),
        )
    ).fetchall()
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [f[3], f[2]]},
            "properties": {
                "device_id": f[0],
                "ts": f[1].isoformat(),
                "acc": f[4],
                "spd": f[5],
                "hdg": f[6],
                "batt": f[7],
                "src": f[8],
                "seq": None if f[9] < 0 else f[9],
            },
        }
        for f in fixes
    ]
    return AlertDetail(
        **{**fields, "details": fields["details"] or {}},
        lat=lat,
        lon=lon,
        resolution_note=resolution_note,
        history=[
            HistoryEntry(id=h[0], at=h[1], actor=h[2], action=h[3], detail=h[4] or {})
            for h in history
        ],
        notes=[NotePublic(id=n[0], alert_id=n[1], at=n[2], author=n[3], body=n[4]) for n in notes],
        fixes={
            "type": "FeatureCollection",
            "features": features,
            "properties": {
                "subject_id": subject_id,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "fixes": len(features),
                "truncated": len(features) == MAX_FIXES,
            },
        },
    )


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertStatusPublic,
    dependencies=[allow(*ACT_ROLES)],
)
async def acknowledge(
    alert_id: int, request: Request, user: CurrentUser, body: AcknowledgeBody | None = None
) -> AlertStatusPublic:
    """Take an open alert. Repeating it (same user) is a no-op (``changed: false``); an alert
    someone else took, or a resolved one, is a 409."""
    note = body.note if body else None

    def work(conn: psycopg.Connection[Any]) -> lifecycle.AlertStatus:
        _alert_in_scope(conn, user, alert_id)
        return lifecycle.acknowledge(conn, alert_id, user.username, note)

    return _status(await _act(request, work))


@router.post(
    "/alerts/{alert_id}/resolve", response_model=AlertStatusPublic, dependencies=[allow(*ACT_ROLES)]
)
async def resolve(
    alert_id: int, body: ResolveBody, request: Request, user: CurrentUser
) -> AlertStatusPublic:
    """Close an open or acknowledged alert with an outcome; tamper and absconder alerts need a
    note (422 ``note_required``). Resolving a resolved alert is a 409 ``already_resolved``."""

    def work(conn: psycopg.Connection[Any]) -> lifecycle.AlertStatus:
        _alert_in_scope(conn, user, alert_id)
        return lifecycle.resolve(conn, alert_id, user.username, body.outcome, body.note)

    return _status(await _act(request, work))


@router.post(
    "/alerts/{alert_id}/notes",
    response_model=NotePublic,
    status_code=201,
    dependencies=[allow(*NOTE_ROLES)],
)
async def add_note(
    alert_id: int, body: NoteBody, request: Request, user: CurrentUser
) -> NotePublic:
    """A note on an alert in any status, also after resolution."""

    def work(conn: psycopg.Connection[Any]) -> NotePublic:
        _alert_in_scope(conn, user, alert_id)
        note_id = lifecycle.add_note(conn, alert_id, user.username, body.body)
        row = conn.execute(
            "SELECT id, alert_id, at, author, body FROM alert_notes WHERE id = %s", (note_id,)
        ).fetchone()
        assert row is not None
        return NotePublic(id=row[0], alert_id=row[1], at=row[2], author=row[3], body=row[4])

    return await _act(request, work)


@router.post(
    "/subjects/{subject_id}/absconder",
    response_model=Declaration,
    status_code=201,
    dependencies=[allow(*ACT_ROLES)],
    responses={200: {"model": Declaration, "description": "an absconder alert was already open"}},
)
async def declare_absconder(
    subject_id: int, body: AbsconderBody, request: Request, response: Response, user: CurrentUser
) -> Declaration:
    """Declare the subject an absconder: a critical alert for tracing units, carrying the last
    known position and the trail. 201 when raised; 200 when one was already open (the
    declaration and its note are recorded on it)."""

    def work(conn: psycopg.Connection[Any]) -> lifecycle.Declared:
        row = conn.execute(
            "SELECT id FROM subjects WHERE id = %s"
            " AND (%s::text[] IS NULL OR region_id = ANY(%s::text[])) AND (%s OR NOT victim)",
            (subject_id, user.region_filter(), user.region_filter(), may_read_victims(user)),
        ).fetchone()
        if row is None:
            raise lifecycle.NotFound(
                "subject_not_found",
                f"subject {subject_id} does not exist",
                subject_id=subject_id,
            )
        return lifecycle.declare_absconder(conn, subject_id, user.username, body.note)

    declared = await _act(request, work)
    if not declared.raised:
        response.status_code = status.HTTP_200_OK
    return Declaration(alert_id=declared.alert_id, raised=declared.raised, note_id=declared.note_id)
