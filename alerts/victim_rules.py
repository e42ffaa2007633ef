"""Victim protection rules: a victim's panic, and a victim phone that stopped giving positions.

Pure, no I/O (part of the rule core). A victim subject has a rule state of its own (marked
``victim``), fed by the devices it holds as ``victim``; these rules are the only ones that judge
it: a victim is never in breach of anything, so no zone, silence or battery rule of an offender
runs on it (a silent victim phone raising ``no_communication`` would escalate to an absconder).

* **Panic.** A ``panic`` event from a victim's device opens ``victim_panic`` (critical) with the
  victim's position at that moment: the last fix the victim's devices gave at or before the
  press (the panic device may have no GNSS; the phone in the same bag has). Presses within
  ``PANIC_FOLLOW_S`` of the last one update the same alert rather than raising new ones (a
  frightened person presses again and again), and every victim fix in that window moves the
  alert's position, so operators and the tracing unit follow the victim. A panic is never
  cleared by the platform: an operator resolves it, with a note.
* **Protection degraded.** The victim zone follows the victim's last position only while it is
  younger than ``victim_max_age_s`` (geofence: older is stale, the zone no longer applies). When
  none of the victim's devices has given a position for that long, ``victim_protection_degraded``
  (warning) opens on the rule clock: the moment protection really is off, not before. It clears
  at the first fresh fix (younger than ``victim_max_age_s`` on the rule clock); a late upload of
  old fixes does not put the zone back, so it does not clear it either.

Which subjects the alerts are raised on is the engine's decision (`alerts/victim_protection.py`,
``watchers``): changes here carry the victim's own device and position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.holding import ASSIGNMENT_ENDED
from tagwatch.alerts.rules import AlertChange, EventObs, FixObs, Observation, SubjectState
from tagwatch.alerts.thresholds import Thresholds

PANIC_FOLLOW_S: Final = 1800.0
"""Presses within this long of the last one are the same emergency (one alert, updated); the
victim's fixes move the alert's position for as long."""

TRAIL_POINTS: Final = 30


def _ms(ts: float) -> int:
    return round(ts * 1000)


def _position_at(
    trail: list[tuple[float, float, float, float]], ts: float
) -> tuple[float, float, float, float] | None:
    """The last point at or before ``ts``; the first one after it when there is none before
    (a panic pressed just before the first fix: where the victim was a moment later)."""
    before = [p for p in trail if p[0] <= ts]
    if before:
        return before[-1]
    return trail[0] if trail else None


def _order(obs: Observation) -> tuple[float, int, str]:
    """Fix-time order; at one instant the fix first (an OwnTracks transition is a fix and an
    event at the same time: the press is where that fix is)."""
    return (obs.ts, 0 if isinstance(obs, FixObs) else 1, obs.device_id)


def last_position_ts(state: SubjectState) -> float | None:
    fixes = [d.last_fix for d in state.devices.values() if d.last_fix is not None]
    return max(fixes) if fixes else None


def _reference(state: SubjectState) -> float | None:
    """Since when the victim has had no position: the last fix, or, before any fix, the first
    time a device of the victim was heard (a phone that never gave one protects nobody)."""
    last = last_position_ts(state)
    if last is not None:
        return last
    heard = [d.last_heard for d in state.devices.values() if d.last_heard is not None]
    return min(heard) if heard else None


def evaluate_victim(
    state: SubjectState,
    subject_id: int,
    observations: Iterable[Observation],
    thresholds: Thresholds,
    now: float,
) -> list[AlertChange]:
    """Run a victim's fixes and events through ``state`` (updated in place)."""
    state.victim = True
    changes: list[AlertChange] = []
    for obs in sorted(observations, key=_order):
        dev = state.device(obs.device_id)
        dev.last_msg = obs.ts if dev.last_msg is None else max(dev.last_msg, obs.ts)
        dev.last_heard = now if dev.last_heard is None else max(dev.last_heard, now)
        if isinstance(obs, FixObs):
            _fix(state, obs, thresholds, now, changes)
        elif isinstance(obs, EventObs) and obs.type == "panic":
            _panic(state, subject_id, obs, thresholds, now, changes)
    return changes


def _fix(
    state: SubjectState,
    fix: FixObs,
    thresholds: Thresholds,
    now: float,
    changes: list[AlertChange],
) -> None:
    dev = state.device(fix.device_id)
    dev.last_fix = fix.ts if dev.last_fix is None else max(dev.last_fix, fix.ts)
    state.trail.append((fix.ts, fix.lon, fix.lat, fix.acc))
    state.trail.sort()
    del state.trail[: max(0, len(state.trail) - TRAIL_POINTS)]
    if state.degraded is not None and now - fix.ts <= thresholds.victim_max_age_s:
        changes.append(_clear_degraded(state, fix.ts))
    if state.panic is not None:
        key, first, last = state.panic
        if first <= fix.ts <= last + PANIC_FOLLOW_S:
            newest = state.trail[-1]
            changes.append(
                AlertChange(
                    action="update",
                    episode_key=key,
                    type=v.VICTIM_PANIC,
                    at=newest[0],
                    first_fix_at=first,
                    device_id=fix.device_id,
                    lon=newest[1],
                    lat=newest[2],
                    acc=newest[3],
                )
            )


def _clear_degraded(
    state: SubjectState, at: float, details: Mapping[str, Any] | None = None
) -> AlertChange:
    """End the open protection-degraded episode (a fresh position, or no device left)."""
    assert state.degraded is not None
    key, since = state.degraded
    state.degraded = None
    return AlertChange(
        action="clear",
        episode_key=key,
        type=v.VICTIM_DEGRADED,
        at=at,
        first_fix_at=since,
        details=details or {},
    )


def _panic(
    state: SubjectState,
    subject_id: int,
    event: EventObs,
    thresholds: Thresholds,
    now: float,
    changes: list[AlertChange],
) -> None:
    pos = _position_at(state.trail, event.ts)
    details: dict[str, float | str] = {"pressed_on": event.device_id}
    if pos is not None:
        details["position_age_s"] = round(event.ts - pos[0], 1)
    if state.panic is not None and abs(event.ts - state.panic[2]) <= PANIC_FOLLOW_S:
        key, first, last = state.panic
        state.panic = [key, min(first, event.ts), max(last, event.ts)]
        action = "update"
    else:
        key = f"{v.VICTIM_PANIC}:v{subject_id}:{_ms(event.ts)}"
        state.panic = [key, event.ts, event.ts]
        action = "open"
    changes.append(
        AlertChange(
            action=action,
            episode_key=key,
            type=v.VICTIM_PANIC,
            at=event.ts,
            first_fix_at=state.panic[1],
            device_id=event.device_id,
            lon=pos[1] if pos else None,
            lat=pos[2] if pos else None,
            acc=pos[3] if pos else None,
            late=now - event.ts > thresholds.late_after_s,
            details=details,
        )
    )


def tick_victim(
    state: SubjectState, subject_id: int, thresholds: Thresholds, now: float
) -> list[AlertChange]:
    """The victim's clock rule: protection degraded once no position is younger than
    ``victim_max_age_s``; a panic's follow window ends (nothing to raise)."""
    changes: list[AlertChange] = []
    if state.panic is not None and now - state.panic[2] > PANIC_FOLLOW_S:
        state.panic = None
    if not state.devices and state.degraded is not None:
        # the victim holds no device any more (alerts/holding.py released it): nothing left
        # to degrade; the alert stays for an operator to resolve
        changes.append(_clear_degraded(state, now, {"reason": ASSIGNMENT_ENDED}))
    since = _reference(state)
    limit = thresholds.victim_max_age_s
    if state.degraded is None and since is not None and now - since > limit:
        first = since + limit
        key = f"{v.VICTIM_DEGRADED}:v{subject_id}:{_ms(first)}"
        state.degraded = [key, first]
        changes.append(
            AlertChange(
                action="open",
                episode_key=key,
                type=v.VICTIM_DEGRADED,
                at=now,
                first_fix_at=first,
                details={
                    "reason": "no_position",
                    "last_position_age_s": round(now - since, 1),
                    "victim_max_age_s": limit,
                },
            )
        )
    return changes


def due_victim(state: SubjectState, thresholds: Thresholds) -> float | None:
    """The next rule-clock time at which `tick_victim` could change something."""
    times: list[float] = []
    if state.panic is not None:
        times.append(state.panic[2] + PANIC_FOLLOW_S + 1.0)
    since = _reference(state)
    if state.degraded is None and since is not None:
        times.append(since + thresholds.victim_max_age_s + 1.0)
    return min(times) if times else None


__all__ = [
    "PANIC_FOLLOW_S",
    "due_victim",
    "evaluate_victim",
    "last_position_ts",
    "tick_victim",
]
