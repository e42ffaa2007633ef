"""Victim protection: who sees a victim's alerts, what the victim's phone is told, and which
OwnTracks messages from a victim's phone are a call for help. Pure, no I/O.

**Who sees a victim's alert.** Victims' data is for supervisors and admins only (migration 0013):
an alert on a victim subject is invisible to operators and tracers. But a victim's panic and a
victim phone that no longer protects anyone are for the people who watch the *offender*: so
``victim_panic`` and ``victim_protection_degraded`` are raised on every offender whose victim
zone follows this victim ("watchers"), with that zone, in the offender's region, and go out
through the outbox like any alert of that offender (critical ones to the tracing unit). Only
when no offender's zone follows the victim are they raised on the victim subject itself
(supervisors and admins see it; the outbox still delivers it). The watchers of an open episode
are remembered in the victim's state, so its updates and its clearing reach the same alerts
even if a zone is removed meanwhile.

What such an alert shows: ``victim_protection_degraded`` carries no position at all.
``victim_panic`` carries the victim's position at the press (and as it moves for half an hour):
the victim is asking for help, and help needs to know where to go, so operators and tracers see
it, and reading it is audited as a read of the victim's data (api/routes/alerts.py). It carries
neither the victim's device (device_id is left empty on an offender's alert) nor the zone's
name.

**What the victim's phone is told** (`VICTIM_NOTICES`): that the offender may be near, or is
near, and what to do; that an alarm was received. Never where the offender is, how far, or in
which direction: the notice is sent to a phone that may be in the wrong hands (a victim's phone
taken by the offender would otherwise become a tracker of the monitored person's alerts), and a
position would invite the victim to look. No all-clear is sent: that the offender left the band
is itself his position, and an all-clear that turns out wrong is worse than none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.rules import AlertChange, SubjectState

VICTIM_NOTICES: Final[dict[str, str]] = {
    v.VICTIM_WARNING: (
        "Safety notice: the person you are protected from may be nearby. Stay somewhere "
        "safe and keep your phone with you. If you are in danger, call the emergency number."
    ),
    v.VICTIM_PROXIMITY: (
        "Safety alert: the person you are protected from is close to you. Go somewhere safe "
        "now and call the emergency number. The monitoring centre has been alerted."
    ),
    v.VICTIM_PANIC: "Your alarm was received by the monitoring centre.",
}
assert set(VICTIM_NOTICES) == v.VICTIM_NOTICE_TYPES
VICTIM_NOTICE_TTL_S: Final = 600.0
"""A notice that could not be delivered in ten minutes is stale: it expires (the sender's
expiry), the alert itself is still there for operators to phone the victim."""

# OwnTracks names that make a victim phone's message a call for help (see `owntracks_panic`).
PANIC_NAMES: Final = frozenset({"panic", "sos", "help"})

Watcher = tuple[int, int | None]  # (subject the alert is raised on, its victim zone or None)


def owntracks_panic(
    message: Mapping[str, Any],
    *,
    names: Iterable[str] = PANIC_NAMES,
    manual_publish: bool = True,
) -> bool:
    """Whether an OwnTracks message from a **victim's** phone is a call for help. Ingest's
    decoder calls it for devices of kind ``victim_phone`` only and, when true, stores a
    ``panic`` event at the message's ``tst`` beside its fix (docs/phones.md "Victim phones").

    What the apps let a person trigger at will (owntracks/booklet docs/tech/json.md):

    * ``_type: transition`` with ``event: enter`` on a waypoint whose ``desc`` is a panic name:
      on iOS a BLE beacon "panic button" carried by the victim, configured as a waypoint named
      e.g. ``SOS``, enters range when pressed; a geographic waypoint of that name works too.
      ``leave`` is not a panic (the button stopped advertising).
    * ``_type: location`` with a ``poi`` that is a panic name: iOS publishes a point of interest
      from the app's publish menu or a Siri shortcut ("Hey Siri, SOS").
    * ``_type: location`` with ``t: "u"``: the publish button (both apps). On a victim's phone
      the platform has no other use for it, so by default it is the panic button; a
      deployment that finds it pressed by mistake turns it off (``manual_publish=False``).

    Names compare without case or surrounding spaces. Anything else (pings, timer and region
    reports, a ``leave``) is not a panic.
    """
    wanted = {n.strip().casefold() for n in names}

    def named(value: object) -> bool:
        return isinstance(value, str) and value.strip().casefold() in wanted

    kind = message.get("_type")
    if kind == "transition":
        return message.get("event") == "enter" and named(message.get("desc"))
    if kind == "location":
        if named(message.get("poi")):
            return True
        return manual_publish and message.get("t") == "u"
    return False


def watchers(victim_zones: Mapping[int, int | None], victim_id: int) -> list[Watcher]:
    """Where a victim's alerts go: (offender, zone) for every victim zone that follows the
    victim, by offender then zone; the victim alone when none does. ``victim_zones`` maps the
    zones that follow this victim to their owner (None for a zone without one)."""
    out: list[Watcher] = sorted(
        (owner, zone) for zone, owner in victim_zones.items() if owner is not None
    )
    return out or [(victim_id, None)]


def route(
    state: SubjectState, changes: Sequence[AlertChange], now_watchers: Sequence[Watcher]
) -> list[tuple[int, AlertChange]]:
    """Each change of a victim's episode as the change of each watcher's alert. An opening
    goes to ``now_watchers`` (remembered in ``state``); its updates and its clearing go where
    it was opened; a clearing forgets them. On an offender's alert the victim's device is left
    out and the zone is the offender's victim zone."""
    out: list[tuple[int, AlertChange]] = []
    for change in changes:
        if change.action == "open":
            state.watchers[change.episode_key] = [[s, z] for s, z in now_watchers]
        targets = state.watchers.get(change.episode_key, [])
        if change.action == "clear":
            state.watchers.pop(change.episode_key, None)
        for subject, zone in targets:
            assert subject is not None
            if zone is None:
                out.append((subject, change))
            else:
                out.append((subject, replace(change, zone_id=zone, device_id=None)))
    live = {episode[0] for episode in (state.panic, state.degraded) if episode}
    for key in list(state.watchers):
        if key not in live:
            del state.watchers[key]  # a panic's follow window ended: nothing more to route
    return out


__all__ = [
    "PANIC_NAMES",
    "VICTIM_NOTICES",
    "VICTIM_NOTICE_TTL_S",
    "owntracks_panic",
    "route",
    "watchers",
]
