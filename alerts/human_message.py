"""The short text a person gets on a phone (e-mail, SMS, a messenger) for one outbox row.

Pure: the outbox payload, a few facts about the alert and the recipient's role in, a title and a
body out. A message names the subject, the alert in words, when (in the subject's time zone,
else UTC, always with the zone's name), the office a critical alert was routed to
(``payload["routing"]["office"]``, store/places.py) else the region, and a link to the alert in
the console. It carries no more location than its recipient's role may read:

* a victim's own alert (her panic, her protection degraded) reaches supervisor-level channels
  only (``store.engine_repository.enqueue``) and never carries her position;
* an alert of a zone that protects a victim carries the offender's position only to a
  supervisor-level channel: for tracers and operators the API withholds what would locate the
  victim (docs/api.md "Victims' data"), and the offender is near her;
* zone names of protecting zones never reach the payload (``alert_public_details``).

A message leaves the platform's audit trail (an e-mail box is not a console session), so for
everything else it gives the position as it stands in the outbox payload, which webhooks carry
already, and points to the console for the trail and the map, where the read is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tagwatch.alerts import vocabulary as v

SUPERVISOR: Final = "supervisor"
MAX_TITLE: Final = 120

TYPE_WORDS: Final[dict[str, str]] = {
    v.EXCLUSION_ENTRY: "Entered an exclusion zone",
    v.EXCLUSION_WARNING: "Near an exclusion zone",
    v.INCLUSION_EXIT: "Left the inclusion zone",
    v.CURFEW_VIOLATION: "Curfew violation",
    v.VICTIM_PROXIMITY: "Near a protected victim",
    v.VICTIM_WARNING: "Approaching a protected victim",
    v.STRAP_TAMPER: "Strap tampered with",
    v.CASE_TAMPER: "Device case tampered with",
    v.BATTERY_LOW: "Battery low",
    v.BATTERY_CRITICAL: "Battery critical",
    v.GPS_LOST: "GPS lost",
    v.NO_COMMUNICATION: "Device silent",
    v.GPS_JAMMING: "GPS jamming",
    v.ABSCONDER: "Absconder",
    v.VICTIM_PANIC: "Victim panic alarm",
    v.VICTIM_DEGRADED: "Victim protection degraded",
}
EVENT_WORDS: Final[dict[str, str]] = {
    "opened": "new",
    "cleared": "condition ended",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
    "escalated": "NOT ACKNOWLEDGED - escalated",
}


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who reads it: the channel's role, and where the console lives (None: no link)."""

    role: str = "tracer"
    console_base_url: str | None = None


@dataclass(frozen=True, slots=True)
class About:
    """Facts about the alert the payload does not carry."""

    subject_name: str | None = None
    timezone: str | None = None
    region_name: str | None = None
    victim_subject: bool = False
    protects_victim: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


def type_words(alert_type: str) -> str:
    return TYPE_WORDS.get(alert_type, alert_type.replace("_", " ").capitalize())


def local_time(when: str | datetime | None, timezone: str | None) -> str:
    """``2026-12-05 16:05 SAST (Africa/Johannesburg)``; UTC (said so) when the zone is unknown."""
    if when is None:
        return "time unknown"
    moment = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    zone_name = timezone or "UTC"
    try:
        zone: Any = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone, zone_name = UTC, "UTC"
    local = moment.astimezone(zone)
    abbreviation = local.strftime("%Z")
    shown = zone_name if abbreviation in {zone_name, ""} else f"{abbreviation} ({zone_name})"
    return f"{local:%Y-%m-%d %H:%M} {shown}"


def _position(payload: Mapping[str, Any]) -> tuple[float, float, float | None] | None:
    details = payload.get("details") or {}
    last = details.get("last_known") if isinstance(details, Mapping) else None
    if isinstance(last, Mapping) and last.get("lat") is not None and last.get("lon") is not None:
        return float(last["lat"]), float(last["lon"]), last.get("acc")
    if payload.get("lat") is not None and payload.get("lon") is not None:
        return float(payload["lat"]), float(payload["lon"]), None
    return None


def may_show_position(about: About, recipient: Recipient) -> bool:
    """Never a victim's own position; an offender's near a victim to supervisors only."""
    if about.victim_subject:
        return False
    return not about.protects_victim or recipient.role == SUPERVISOR


def _place(payload: Mapping[str, Any], about: About) -> str | None:
    routing = payload.get("routing")
    if isinstance(routing, Mapping) and routing.get("office"):
        return f"Office: {routing['office']}"
    if about.region_name:
        return f"Region: {about.region_name}"
    region = payload.get("region")
    return f"Region: {region}" if region else None


def compose(payload: Mapping[str, Any], about: About, recipient: Recipient) -> Message:
    """The title and body for one notification (the outbox payload with ``notification_id``)."""
    alert_type = str(payload.get("type", "alert"))
    event = str(payload.get("event", "opened"))
    severity = str(payload.get("severity", "")).upper()
    who = about.subject_name or f"subject {payload.get('subject_id', '?')}"
    what = type_words(alert_type)
    escalated = event == "escalated"
    prefix = "ESCALATED " if escalated else ""
    title = f"{prefix}[{severity}] {what}: {who}"
    if len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1] + "…"
    lines = [
        f"{what} - {who}",
        f"When: {local_time(payload.get('opened_at'), about.timezone)}",
        f"Status: {EVENT_WORDS.get(event, event)}",
    ]
    place = _place(payload, about)
    if place:
        lines.append(place)
    if escalated:
        lines.append("Nobody acknowledged this alert in time: please act or acknowledge it.")
    position = _position(payload) if may_show_position(about, recipient) else None
    if position is not None:
        lat, lon, acc = position
        accuracy = f" (±{float(acc):.0f} m)" if acc is not None else ""
        lines.append(f"Last known position: {lat:.5f}, {lon:.5f}{accuracy}")
    elif about.victim_subject or about.protects_victim:
        lines.append("Position withheld (victim protection): see the console.")
    alert_id = payload.get("alert_id")
    if recipient.console_base_url and alert_id is not None:
        lines.append(f"Open: {recipient.console_base_url.rstrip('/')}/#/alert/{alert_id}")
    lines.append(f"Alert {alert_id}, notification {payload.get('notification_id', '?')}")
    return Message(title, "\n".join(lines))


__all__ = ["About", "Message", "Recipient", "compose", "local_time", "type_words"]
