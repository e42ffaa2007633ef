"""Alert bodies: the queue's summaries, an alert's detail, and what operators send.

Positions are location data: a summary (the queue, the live feed) carries none - no ``lat``,
``lon``, nor the absconder's ``last_known`` and ``trail`` in ``details`` -, the detail does, and
reading the detail is written to the audit log.

Victims' data: an alert of a zone that protects a victim (a victim zone, or an exclusion zone
protecting one) carries the offender's position (what a tracing unit acts on), never the
victim's; its summary (for everyone) and its detail for operators and tracers leave out what
would locate the victim: the zone's name (``details.zone_name``) and ``worst_distance_m`` (the
offender's distance to the zone: several of them, with the offender's positions, locate the
victim by trilateration). ``redacted`` says so. Supervisors and admins get them in the detail,
and that read names the victim in the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from tagwatch.alerts import vocabulary as v

AlertStatusName = Literal["open", "acknowledged", "resolved"]
SeverityName = Literal["info", "warning", "critical"]
AlertTypeName = Literal[
    "exclusion_zone_entry",
    "exclusion_zone_warning",
    "inclusion_zone_exit",
    "curfew_violation",
    "victim_proximity",
    "victim_proximity_warning",
    "strap_tamper",
    "case_tamper",
    "battery_low",
    "battery_critical",
    "gps_lost",
    "no_communication",
    "gps_jamming",
    "absconder",
    "victim_panic",
    "victim_protection_degraded",
    "phone_monitoring_degraded",
    "position_accuracy_unknown",
]
assert set(get_args(AlertTypeName)) == v.ALERT_TYPES, "AlertTypeName must follow the vocabulary"
assert set(get_args(SeverityName)) == set(v.SEVERITY_RANK)

# Keys of ``alerts.details`` that hold positions: only in the (audited) detail.
LOCATION_DETAILS = frozenset({"last_known", "trail"})


# Keys of ``alerts.details`` that would locate a victim when the alert's zone protects one.
VICTIM_DETAILS = frozenset({"zone_name"})


def without_location(details: dict[str, Any] | None) -> dict[str, Any]:
    return {k: val for k, val in (details or {}).items() if k not in LOCATION_DETAILS}


def without_victim(details: dict[str, Any] | None) -> dict[str, Any]:
    return {k: val for k, val in (details or {}).items() if k not in VICTIM_DETAILS}


class AlertSummary(BaseModel):
    id: int
    subject_id: int | None
    device_id: str | None
    zone_id: int | None
    region_id: str | None = Field(description="the region the alert was raised in")
    type: str
    severity: SeverityName
    status: AlertStatusName
    opened_at: datetime
    raised_at: datetime
    updated_at: datetime
    first_fix_at: datetime | None
    last_fix_at: datetime | None
    cleared_at: datetime | None
    late: bool
    escalated: bool
    fix_count: int
    worst_distance_m: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: str | None
    details: dict[str, Any] = Field(description="without positions (last_known, trail)")
    redacted: bool = Field(
        default=False,
        description="the alert's zone protects a victim and what would locate the victim "
        "(details.zone_name, worst_distance_m) was withheld",
    )
    ack_deadline: datetime | None = Field(
        default=None,
        description="when the alert escalates unless acknowledged: raised_at plus its"
        " severity's TAGWATCH_ACK_DEADLINE_<SEVERITY>_S; null when that severity has none",
    )
    ack_seconds_left: float | None = Field(
        default=None,
        description="seconds until ack_deadline while the alert is open (negative: overdue);"
        " null once acknowledged or resolved, or without a deadline",
    )
    ack_escalated_at: datetime | None = Field(
        default=None, description="when the dispatcher escalated it for want of acknowledgement"
    )


def acknowledgement_fields(
    row: dict[str, Any], deadlines: dict[str, float | None], now: datetime
) -> dict[str, Any]:
    """``ack_deadline`` and ``ack_seconds_left`` of an alert row (docs/alerts.md "Escalation")."""
    limit = deadlines.get(row["severity"])
    if limit is None:
        return {"ack_deadline": None, "ack_seconds_left": None}
    deadline = row["raised_at"] + timedelta(seconds=limit)
    left = (deadline - now).total_seconds() if row["status"] == "open" else None
    return {"ack_deadline": deadline, "ack_seconds_left": left}


class AlertPage(BaseModel):
    items: list[AlertSummary]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


class HistoryEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


class NotePublic(BaseModel):
    id: int
    alert_id: int
    at: datetime
    author: str
    body: str


class AlertDetail(AlertSummary):
    lat: float | None
    lon: float | None
    resolution_note: str | None
    details: dict[str, Any] = Field(description="everything, positions included")
    history: list[HistoryEntry]
    notes: list[NotePublic]
    fixes: dict[str, Any] = Field(
        description="GeoJSON FeatureCollection of the subject's fixes around the alert"
    )


class AcknowledgeBody(BaseModel):
    note: str | None = Field(default=None, description="optional; stored as a note")


class ResolveBody(BaseModel):
    outcome: str = Field(description=f"one of {', '.join(sorted(v.OUTCOMES))}")
    note: str | None = Field(
        default=None,
        description=f"required for {', '.join(sorted(v.NOTE_REQUIRED))}; stored as a note",
    )


class NoteBody(BaseModel):
    body: str


class AbsconderBody(BaseModel):
    note: str = Field(description="why the subject is declared an absconder (required)")


class AlertStatusPublic(BaseModel):
    """An alert's lifecycle fields after an action; ``changed`` is false for a repeated one."""

    alert_id: int
    type: str
    status: AlertStatusName
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: str | None
    changed: bool


class Declaration(BaseModel):
    alert_id: int
    raised: bool = Field(description="false when an absconder alert was already open")
    note_id: int
    case_id: int | None = Field(
        default=None, description="the absconder case the alert opened or joined (GET /cases/{id})"
    )
