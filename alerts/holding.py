"""Assignments bound every rule: a subject's rule state holds only the devices it holds now.

Pure, no I/O (part of the rule core). A device is judged for a subject only while it is assigned
to that subject: fix-driven rules already look up the holder at each fix's own time; the clock
rules (silence, GPS lost, curfew while silent) judge what the subject's state remembers, so before
they run, `release` drops from the state every device the subject does not hold as offender at
the rule clock's time. Without it, a tag taken off at the end of an order raised
`no_communication` 16 minutes after its last fix (issue 14).

Releasing a device clears its open device episodes (`no_communication`, `gps_lost`, tampers,
battery, jamming) with the reason ``assignment_ended``, when the release happens: the
condition is no longer monitored, so it cannot stay "live" or escalate to an absconder, yet the
alert itself stays in the queue (cleared is not resolved) for an operator to resolve with an
outcome. When the subject holds no offender device at all any more (the order is over), its open
zone episodes are cleared the same way and its zone tracks forgotten. The trail and the watermark
stay: they are the subject's own history, and a store-and-forward upload from the held period
must still go through the late-data path.
"""

from __future__ import annotations

from collections.abc import Iterable

from tagwatch.alerts.ports import Assignment
from tagwatch.alerts.rules import AlertChange, SubjectState

ASSIGNMENT_ENDED = "assignment_ended"
# Ingest accepts fixes up to 300 s ahead of its clock (ingest/decode.py, future_tolerance_s): a
# tag whose clock runs ahead is held at its fix's time a few minutes before the rule clock reaches
# the assignment's start. Such a device is not released (that would clear what its first
# messages raised); it is not judged either, having just been heard.
START_GRACE_S = 300.0


def holds(
    ranges: Iterable[Assignment],
    subject_id: int,
    device_id: str,
    t: float,
    role: str = "offender",
) -> bool:
    """Whether ``subject_id`` holds ``device_id`` in ``role`` at ``t`` (or will within
    ``START_GRACE_S``)."""
    return any(
        h.subject_id == subject_id
        and h.device_id == device_id
        and h.role == role
        and h.start - START_GRACE_S <= t < h.end
        for h in ranges
    )


def release(
    state: SubjectState, subject_id: int, ranges: Iterable[Assignment], now: float
) -> list[AlertChange]:
    """Drop from ``state`` (in place) every device ``subject_id`` does not hold as offender at
    ``now``, clearing its open device episodes; when it holds none any more, clear its open zone
    episodes too. ``ranges`` must hold every assignment of the subject (others' are ignored).
    Returns the clear changes (details carry ``reason: assignment_ended``), at ``now``: when the
    platform stopped watching the condition. An end recorded after the fact lies before it, and
    may even precede the alert's opening (a tag taken off at 09:00, silent since, alerted at
    09:16, the end entered at 10:00); the end itself is in the assignment and the audit log."""
    ranges = list(ranges)
    # a victim's state holds the devices the victim carries (alerts/victim_rules.py)
    role = "victim" if state.victim else "offender"
    changes: list[AlertChange] = []
    for device_id in sorted(state.devices):
        if holds(ranges, subject_id, device_id, now, role):
            continue
        dev = state.devices.pop(device_id)
        for alert_type, key in sorted(dev.episodes.items()):
            first = dev.episode_first.get(alert_type)
            changes.append(
                AlertChange(
                    action="clear",
                    episode_key=key,
                    type=alert_type,
                    at=now,
                    first_fix_at=first,
                    device_id=device_id,
                    details={"reason": ASSIGNMENT_ENDED},
                )
            )
    holds_any = any(
        h.subject_id == subject_id and h.role == role and h.start - START_GRACE_S <= now < h.end
        for h in ranges
    )
    if holds_any or not state.tracks:
        return changes
    for key in sorted(state.tracks):
        track = state.tracks.pop(key)
        if track.episode is None:
            continue
        changes.append(
            AlertChange(
                action="clear",
                episode_key=track.episode,
                # the episode key starts with the alert type (rules.py: type, zone, first fix)
                type=track.episode.split(":", 1)[0],
                at=now,
                first_fix_at=track.opened,
                zone_id=int(key.split("/", 1)[0]),
                distance_m=track.worst,
                fix_count=track.count,
                details={"reason": ASSIGNMENT_ENDED},
            )
        )
    return changes


__all__ = ["ASSIGNMENT_ENDED", "START_GRACE_S", "holds", "release"]
