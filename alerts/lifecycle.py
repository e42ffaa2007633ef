"""What operators do to alerts: acknowledge, resolve with an outcome, note, declare an absconder.

Statuses go ``open`` -> ``acknowledged`` -> ``resolved`` and never back:

* **acknowledge** an open alert: the operator takes it. Acknowledging an alert that the same
  actor already acknowledged is a no-op (a retried request); one that someone else acknowledged
  is a conflict (``already_acknowledged``: the operator should know a colleague has it); a
  resolved one is a conflict (``already_resolved``).
* **resolve** an open or acknowledged alert with an outcome from ``vocabulary.OUTCOMES``. An open
  alert may be resolved directly (an operator who has seen enough): that records an *implicit*
  acknowledgement first (history row ``acknowledged`` with ``{"implicit": true}``,
  ``acknowledged_at``/``_by`` set to the resolution's), so every resolved alert says who took it
  and when. Types in ``vocabulary.NOTE_REQUIRED`` (tampers, absconder) need a non-blank note.
  Resolving a resolved alert is a conflict: two operators cannot both resolve it.
* **notes** may be added to an alert in any status (also after resolution: what the tracing unit
  reported later). A note given with an acknowledgement or a resolution is stored as a note too,
  and the resolution's note also in ``alerts.resolution_note``.
* **declare_absconder**: an operator raises the critical ``absconder`` alert for a subject (the
  engine's own ``raise_absconder``, so the alert carries the last known position, the trail and
  the open alerts). When one is already open, no second one is raised: the declaration and its
  note are recorded on the open one.

Every change writes ``alert_history`` (actor, action, detail; the time is the database's), and
each status change writes an outbox event (``acknowledged``, ``resolved``; the engine writes
``opened`` and ``cleared``) in the same transaction, so notification receivers and the live feed
see it. Notes alone are not notified.

Each function runs in ``conn.transaction()``: on an idle connection it commits on success, inside
the caller's transaction it is a savepoint and the caller commits. The alert row is locked
(``store.alerts.lock_alert``, ``FOR UPDATE``) before it is checked, so two operators racing on one
alert are serialised and the second sees the first's result (exactly one resolution wins). The
statements are ``store.alerts``' and ``store.engine_repository``'s; this module holds the rules.

Refusals raise :class:`LifecycleError` (or a subclass) carrying a machine-readable ``reason`` and
the HTTP status the API should answer with: 404 not found, 409 conflict with the alert's current
status, 422 invalid input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from tagwatch.alerts import vocabulary as v
from tagwatch.store import alerts as alert_store
from tagwatch.store import cases
from tagwatch.store.alerts import LockedAlert
from tagwatch.store.engine_repository import add_history as _history
from tagwatch.store.engine_repository import clock, enqueue, raise_absconder

OPEN: Final = "open"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"

# Outbox events (``outbox.event``, ``payload.event``). The engine writes the first two.
EVENT_OPENED: Final = "opened"
EVENT_CLEARED: Final = "cleared"
EVENT_ACKNOWLEDGED: Final = "acknowledged"
EVENT_RESOLVED: Final = "resolved"
EVENTS: Final = frozenset({EVENT_OPENED, EVENT_CLEARED, EVENT_ACKNOWLEDGED, EVENT_RESOLVED})

MAX_NOTE_CHARS: Final = 10_000  # alert_notes.body CHECK
MAX_ACTOR_CHARS: Final = 200


class LifecycleError(Exception):
    """A refused lifecycle operation. ``reason`` is stable (for clients); ``status_code`` is
    what the API answers with."""

    status_code: int = 422

    def __init__(self, reason: str, message: str, **context: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.context = context

    def as_detail(self) -> dict[str, Any]:
        """The API's ``{"detail": ...}`` body."""
        return {"reason": self.reason, "message": self.message, **self.context}


class NotFound(LifecycleError):
    status_code = 404


class Conflict(LifecycleError):
    """The alert's current status does not allow the change (another operator got there)."""

    status_code = 409


class Invalid(LifecycleError):
    """The request itself is wrong: unknown outcome, missing or blank note, bad actor."""

    status_code = 422


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """An alert's lifecycle fields after an operation; ``changed`` is False for a no-op."""

    alert_id: int
    type: str
    status: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: str | None
    changed: bool = True


def _actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise Invalid("actor_required", "an actor (who does this) is required")
    actor = actor.strip()
    if len(actor) > MAX_ACTOR_CHARS:
        raise Invalid("actor_too_long", f"actor longer than {MAX_ACTOR_CHARS} characters")
    return actor


def _clean_note(note: str | None) -> str | None:
    """A note's text, or None when it is missing or blank."""
    if note is None:
        return None
    if not isinstance(note, str):
        raise Invalid("invalid_note", "a note must be text")
    text = note.strip()
    if not text:
        return None
    if len(text) > MAX_NOTE_CHARS:
        raise Invalid("note_too_long", f"a note has at most {MAX_NOTE_CHARS} characters")
    return text


def _lock(conn: psycopg.Connection[Any], alert_id: int) -> LockedAlert:
    alert = alert_store.lock_alert(conn, alert_id)
    if alert is None:
        raise NotFound("not_found", f"alert {alert_id} does not exist", alert_id=alert_id)
    return alert


def _status(conn: psycopg.Connection[Any], alert_id: int, *, changed: bool) -> AlertStatus:
    fields = alert_store.lifecycle_fields(conn, alert_id)
    assert fields is not None  # locked by this transaction: it cannot have gone
    return AlertStatus(**asdict(fields), changed=changed)


def _already_resolved(alert: LockedAlert) -> Conflict:
    return Conflict(
        "already_resolved",
        f"alert {alert.alert_id} is already resolved",
        alert_id=alert.alert_id,
        status=alert.status,
    )


def acknowledge(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, note: str | None = None
) -> AlertStatus:
    """Take an open alert. See the module docstring for the rules."""
    who = _actor(actor)
    text = _clean_note(note)
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert.status == RESOLVED:
            raise _already_resolved(alert)
        if alert.status == ACKNOWLEDGED:
            if alert.acknowledged_by != who:
                raise Conflict(
                    "already_acknowledged",
                    f"alert {alert_id} is already acknowledged by {alert.acknowledged_by}",
                    alert_id=alert_id,
                    status=alert.status,
                    acknowledged_by=alert.acknowledged_by,
                )
            if text is not None:
                note_id = alert_store.add_note(conn, alert_id, who, text)
                _history(conn, alert_id, who, "note", {"note_id": note_id})
            return _status(conn, alert_id, changed=False)
        alert_store.set_acknowledged(conn, alert_id, who)
        detail: dict[str, Any] = {"from": alert.status, "implicit": False}
        if text is not None:
            detail["note_id"] = alert_store.add_note(conn, alert_id, who, text)
        _history(conn, alert_id, who, "acknowledged", detail)
        enqueue(conn, alert_id, alert.region_id, alert.type, alert.severity, EVENT_ACKNOWLEDGED)
        return _status(conn, alert_id, changed=True)


def resolve(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, outcome: str, note: str | None
) -> AlertStatus:
    """Close an open or acknowledged alert with an outcome (and a note; required for
    ``NOTE_REQUIRED`` types). Resolving an open alert records an implicit acknowledgement."""
    who = _actor(actor)
    if outcome not in v.OUTCOMES:
        raise Invalid(
            "unknown_outcome",
            f"outcome must be one of {', '.join(sorted(v.OUTCOMES))}",
            outcome=outcome,
        )
    text = _clean_note(note)
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert.status == RESOLVED:
            raise _already_resolved(alert)
        if alert.type in v.NOTE_REQUIRED and text is None:
            raise Invalid(
                "note_required",
                f"a {alert.type} alert cannot be resolved without a note saying what was found",
                alert_id=alert_id,
                type=alert.type,
            )
        if alert.status == OPEN:
            alert_store.set_acknowledged(conn, alert_id, who)
            _history(conn, alert_id, who, "acknowledged", {"from": OPEN, "implicit": True})
        alert_store.set_resolved(conn, alert_id, who, outcome, text)
        detail: dict[str, Any] = {"from": alert.status, "outcome": outcome}
        if text is not None:
            detail["note_id"] = alert_store.add_note(conn, alert_id, who, text)
        _history(conn, alert_id, who, "resolved", detail)
        enqueue(conn, alert_id, alert.region_id, alert.type, alert.severity, EVENT_RESOLVED)
        return _status(conn, alert_id, changed=True)


def add_note(conn: psycopg.Connection[Any], alert_id: int, actor: str, body: str) -> int:
    """Add a note to an alert in any status; return the note's id."""
    who = _actor(actor)
    text = _clean_note(body)
    if text is None:
        raise Invalid("empty_note", "a note needs some text")
    with conn.transaction():
        _lock(conn, alert_id)
        note_id = alert_store.add_note(conn, alert_id, who, text)
        _history(conn, alert_id, who, "note", {"note_id": note_id})
        alert_store.touch(conn, alert_id)
        return note_id


@dataclass(frozen=True, slots=True)
class Declared:
    """The absconder alert a declaration produced; ``raised`` is False when one was already open
    and the declaration was recorded on it."""

    alert_id: int
    raised: bool
    note_id: int
    case_id: int | None = None


def declare_absconder(
    conn: psycopg.Connection[Any], subject_id: int, actor: str, note: str
) -> Declared:
    """An operator declares ``subject_id`` an absconder (critical, goes to tracing units)."""
    who = _actor(actor)
    text = _clean_note(note)
    if text is None:
        raise Invalid("note_required", "declaring an absconder needs a note saying why")
    with conn.transaction():
        if not alert_store.lock_subject(conn, subject_id):
            raise NotFound(
                "subject_not_found", f"subject {subject_id} does not exist", subject_id=subject_id
            )
        raised = raise_absconder(conn, subject_id, clock(conn), declared_by=who) > 0
        alert_id = alert_store.lock_open_alert_of_type(conn, subject_id, v.ABSCONDER)
        assert alert_id is not None  # raised now, or already open
        # the case is opened with the alert; one raised before cases existed gets one now
        opened = cases.open_for_alert(conn, alert_id, who)
        note_id = alert_store.add_note(conn, alert_id, who, text)
        _history(conn, alert_id, who, "declared", {"note_id": note_id, "already_open": not raised})
        return Declared(alert_id, raised, note_id, None if opened is None else opened.case_id)


__all__ = [
    "ACKNOWLEDGED",
    "EVENTS",
    "EVENT_ACKNOWLEDGED",
    "EVENT_CLEARED",
    "EVENT_OPENED",
    "EVENT_RESOLVED",
    "OPEN",
    "RESOLVED",
    "AlertStatus",
    "Conflict",
    "Declared",
    "Invalid",
    "LifecycleError",
    "NotFound",
    "acknowledge",
    "add_note",
    "declare_absconder",
    "resolve",
]
