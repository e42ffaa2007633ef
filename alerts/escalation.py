"""The absconder rule: an escalating alert left unresolved past its limit makes an absconder.

Escalating alerts are a strap tamper, a silence (no_communication) and a jurisdiction
(inclusion) exit. "Unresolved" means the condition has not cleared (the strap was not restored,
the device has not spoken, the subject has not come back) and no operator has resolved the
alert. Tracing units need the absconder at once and with what they need to act: the last known
position, the trail before it, and what else is open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.rules import AlertChange, SubjectState
from tagwatch.alerts.thresholds import Thresholds


@dataclass(frozen=True, slots=True)
class OpenAlert:
    alert_id: int | str
    type: str
    opened_at: float
    cleared_at: float | None
    resolved: bool
    escalated: bool


def limit_s(alert_type: str, thresholds: Thresholds) -> float | None:
    return {
        v.STRAP_TAMPER: thresholds.absconder_tamper_s,
        v.NO_COMMUNICATION: thresholds.absconder_silence_s,
        v.INCLUSION_EXIT: thresholds.absconder_exit_s,
    }.get(alert_type)


def due(alert: OpenAlert, now: float, thresholds: Thresholds) -> bool:
    limit = limit_s(alert.type, thresholds)
    return (
        limit is not None
        and not alert.resolved
        and not alert.escalated
        and alert.cleared_at is None
        and now - alert.opened_at >= limit
    )


def absconder(
    source: OpenAlert | None,
    state: SubjectState,
    now: float,
    open_alerts: Sequence[Mapping[str, Any]] = (),
    *,
    declared_by: str | None = None,
) -> AlertChange:
    """The absconder alert for a subject: escalated from ``source``, or declared by an operator."""
    pos = state.last_position
    reason = (
        {"declared_by": declared_by}
        if declared_by is not None
        else {"escalated_from": source.type if source else None}
    )
    key_part = f"a{source.alert_id}" if source is not None else f"declared:{round(now * 1000)}"
    return AlertChange(
        action="open",
        episode_key=f"{v.ABSCONDER}:{key_part}",
        type=v.ABSCONDER,
        at=now,
        first_fix_at=source.opened_at if source else None,
        lon=pos[1] if pos else None,
        lat=pos[2] if pos else None,
        acc=pos[3] if pos else None,
        details={
            **reason,
            "source_alert_id": source.alert_id if source else None,
            "last_known": (
                {"ts": pos[0], "lon": pos[1], "lat": pos[2], "acc": pos[3]} if pos else None
            ),
            "trail": [{"ts": p[0], "lon": p[1], "lat": p[2], "acc": p[3]} for p in state.trail],
            "open_alerts": list(open_alerts),
        },
    )
