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
actions run on a worker thread with a connection of the app's synchronous action pool (see
``api.app``): the region check and the action are one transaction.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime

from tagwatch.alerts import lifecycle
from tagwatch.alerts.lifecycle import LifecycleError
from tagwatch.alerts.vocabulary import SEVERITY_RANK, VICTIM_PANIC
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
    acknowledgement_fields,
    without_location,
    without_victim,
)
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.settings import Settings
from tagwatch.store import alerts as store

router = APIRouter(tags=["alerts"])
READ_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
ACT_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator")
NOTE_ROLES: tuple[Role, ...] = READ_ROLES

# Fixes shown with an alert: from before its first fix to after it cleared (or its last fix).
FIX_MARGIN = timedelta(minutes=10)
MAX_FIX_WINDOW = timedelta(hours=24)
MAX_FIXES = 5000

T = TypeVar("T")


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


def _deadlines(request: Request) -> dict[str, float | None]:
    settings: Settings = request.app.state.settings
    return settings.ack_deadlines()


def _summary(row: dict[str, Any], deadlines: dict[str, float | None]) -> AlertSummary:
    fields = _redact(dict(row))
    fields["details"] = without_location(fields["details"])
    return AlertSummary(**fields, **acknowledgement_fields(row, deadlines, datetime.now(UTC)))


def _encode_cursor(row: dict[str, Any]) -> str:
    rank = SEVERITY_RANK.get(row["severity"], 0)
    raw = json.dumps([rank, row["opened_at"].isoformat(), row["id"]]).encode()
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
    """Run ``work`` on a worker thread in one transaction of a pooled connection: committed
    when it returns, rolled back when it raises (the connection's context)."""
    pool = request.app.state.action_pool

    def run() -> T:
        with pool.connection() as conn:
            return work(conn)

    try:
        return await anyio.to_thread.run_sync(run)
    except LifecycleError as exc:
        raise _refused(exc) from exc


def _alert_in_scope(conn: psycopg.Connection[Any], user: User, alert_id: int) -> None:
    if not store.alert_in_scope(conn, alert_id, user.region_filter(), may_read_victims(user)):
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
    request: Request,
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
    rows = await store.queue(
        conn,
        regions=user.region_filter(),
        victims=may_read_victims(user),
        status=status_,
        types=type_,
        severity=severity,
        subject_id=subject_id,
        region=region,
        opened_from=opened_from,
        opened_to=opened_to,
        after=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    return AlertPage(
        items=[_summary(r, _deadlines(request)) for r in page],
        next_cursor=_encode_cursor(page[-1]) if len(rows) > limit else None,
    )


@router.get("/alerts/{alert_id}", response_model=AlertDetail, dependencies=[allow(*READ_ROLES)])
async def read_alert(
    alert_id: int,
    conn: Conn,
    user: CurrentUser,
    request: Request,
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> AlertDetail:
    """The alert with its history, its notes and the subject's fixes around it (from 10 minutes
    before its first fix to 10 minutes after it cleared or its last fix; at most 24 hours and
    5000 fixes, the latest kept). A location read: written to the audit log."""
    row = await store.alert_detail(conn, alert_id, user.region_filter(), may_read_victims(user))
    if row is None:
        raise _refused(
            lifecycle.NotFound("not_found", f"alert {alert_id} does not exist", alert_id=alert_id)
        )
    fields = dict(row)
    lat, lon, resolution_note = fields.pop("lat"), fields.pop("lon"), fields.pop("resolution_note")
    victim = fields["protected_victim"]
    if may_read_victims(user):
        fields.pop("protected_victim")
    else:
        fields = _redact(fields)
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
    # A victim's panic carries the victim's position at the press (alerts/victim_protection.py):
    # whoever reads it, operators and tracers too, has read the victim's data.
    panic = fields["type"] == VICTIM_PANIC
    if victim is not None and (may_read_victims(user) or panic):
        await audit.record_victim_zones(
            conn, user, [(victim, fields["zone_id"])], via="alert", alert_id=alert_id
        )
    fixes: list[Any] = []
    if subject_id is not None:
        fixes = await store.held_fixes(conn, subject_id, start, end, MAX_FIXES)
    history = await store.history(conn, alert_id)
    notes = await store.notes(conn, alert_id)
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [f["lon"], f["lat"]]},
            "properties": {
                "device_id": f["device_id"],
                "ts": f["ts"].isoformat(),
                "acc": f["acc"],
                "spd": f["spd"],
                "hdg": f["hdg"],
                "batt": f["batt"],
                "src": f["src"],
                "seq": None if f["seq"] < 0 else f["seq"],
            },
        }
        for f in fixes
    ]
    return AlertDetail(
        **{**fields, "details": fields["details"] or {}},
        **acknowledgement_fields(row, _deadlines(request), datetime.now(UTC)),
        lat=lat,
        lon=lon,
        resolution_note=resolution_note,
        history=[HistoryEntry(**{**h, "detail": h["detail"] or {}}) for h in history],
        notes=[NotePublic(**n) for n in notes],
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
        row = store.note(conn, note_id)
        assert row is not None
        return NotePublic(**row)

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
        if not store.subject_in_scope(
            conn, subject_id, user.region_filter(), may_read_victims(user)
        ):
            raise lifecycle.NotFound(
                "subject_not_found",
                f"subject {subject_id} does not exist",
                subject_id=subject_id,
            )
        return lifecycle.declare_absconder(conn, subject_id, user.username, body.note)

    declared = await _act(request, work)
    if not declared.raised:
        response.status_code = status.HTTP_200_OK
    return Declaration(
        alert_id=declared.alert_id,
        raised=declared.raised,
        note_id=declared.note_id,
        case_id=declared.case_id,
    )
