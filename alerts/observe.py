"""From a batch of fixes to rule observations: one geofence call for the whole batch, then the
classification rows are cut per fix. Pure; shared by the ingest engine and the offline replay.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tagwatch.alerts.rules import (
    AWAY,
    HOME,
    AlertChange,
    EventObs,
    FixObs,
    Observation,
    SubjectState,
    ZoneMeta,
    ZoneObs,
    curfew_presence,
)
from tagwatch.alerts.rules import evaluate as run_rules
from tagwatch.alerts.thresholds import Thresholds
from tagwatch.geofence import INSIDE, FixBatch, Schedule, VictimPositions, ZoneIndex


@dataclass(frozen=True, slots=True)
class RawFix:
    subject_id: int
    device_id: str
    ts: float
    lon: float
    lat: float
    acc: float
    src: str = "gps"


def observe(
    index: ZoneIndex, fixes: Sequence[RawFix], victims: VictimPositions | None = None
) -> list[FixObs]:
    """Classify ``fixes`` against every zone that applies to each fix's subject."""
    if not fixes:
        return []
    batch = FixBatch(
        np.fromiter((f.subject_id for f in fixes), np.int64, len(fixes)),
        np.fromiter((f.lon for f in fixes), np.float64, len(fixes)),
        np.fromiter((f.lat for f in fixes), np.float64, len(fixes)),
        np.fromiter((f.acc for f in fixes), np.float64, len(fixes)),
        np.fromiter((f.ts for f in fixes), np.float64, len(fixes)),
    )
    result = index.classify(batch, victims=victims)
    offsets = result.fix_offsets(len(fixes)).tolist()
    zone_id = result.zone_id.tolist()
    state = result.state.tolist()
    in_band = result.in_band.tolist()
    distance = result.distance_m.tolist()
    active = result.active.tolist()
    stale = result.victim_stale.tolist()
    out = []
    for i, f in enumerate(fixes):
        rows = tuple(
            ZoneObs(zone_id[r], state[r], in_band[r], distance[r], active[r], stale[r])
            for r in range(offsets[i], offsets[i + 1])
        )
        out.append(FixObs(f.ts, f.device_id, f.lon, f.lat, f.acc, rows, f.src))
    return out


# -- curfew presence, night by night (the compliance report's figures) -----------------------

VERIFIED = "verified"
CONSISTENT = "consistent"
UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class PresenceNight:
    """One curfew window of one zone and what the fixes (and the home beacon) say of it.

    * ``verified``: at least one fix wholly inside the home (its accuracy circle inside), or the
      approved home beacon in range at some moment of the window;
    * ``consistent``: no such fix, but fixes whose accuracy circle overlaps the home: what a tag
      indoors in a home smaller than its accuracy can at best show;
    * ``unverified``: no fix, or none consistent with the home.

    ``away`` counts the fixes that are evidence of absence (beyond the margin), whatever the
    rest: a verified night with away fixes is a night the subject was home and also out.
    """

    zone_id: int
    start: float
    end: float
    fixes: int = 0
    inside: int = 0
    overlapping: int = 0
    away: int = 0
    beacon: bool = False

    @property
    def presence(self) -> str:
        if self.inside or self.beacon:
            return VERIFIED
        return CONSISTENT if self.overlapping else UNVERIFIED


def active_windows(
    schedule: Schedule | None, timezone: str, start: float, end: float, step_s: float = 60.0
) -> list[tuple[float, float]]:
    """The maximal intervals of [start, end) in which ``schedule`` is on, to ``step_s``
    (a zone without a schedule is always on: one window)."""
    if end <= start:
        return []
    if schedule is None:
        return [(start, end)]
    times = np.arange(start, end, step_s, dtype=np.float64)
    on = schedule.active(times, timezone)
    windows: list[tuple[float, float]] = []
    opened: float | None = None
    for t, active in zip(times.tolist(), on.tolist(), strict=True):
        if active and opened is None:
            opened = t
        elif not active and opened is not None:
            windows.append((opened, t))
            opened = None
    if opened is not None:
        windows.append((opened, end))
    return windows


def presence_nights(
    index: ZoneIndex,
    zones: Mapping[int, ZoneMeta],
    windows: Mapping[int, Sequence[tuple[float, float]]],
    fixes: Sequence[RawFix],
    beacon_home: Sequence[tuple[float, float]] = (),
) -> list[PresenceNight]:
    """Each curfew window of each zone with its presence (see PresenceNight). ``fixes`` are the
    subject's, ``beacon_home`` the intervals in which its approved home beacon was in range."""
    counts: dict[tuple[int, int], list[int]] = {}
    for obs in observe(index, fixes):
        for z in obs.zones:
            meta = zones.get(z.zone_id)
            if meta is None or meta.kind != "curfew":
                continue
            spans = windows.get(z.zone_id, ())
            at = next((i for i, (a, b) in enumerate(spans) if a <= obs.ts < b), None)
            if at is None:
                continue
            row = counts.setdefault((z.zone_id, at), [0, 0, 0, 0])
            row[0] += 1
            presence = curfew_presence(meta, z, obs.acc, beacon_home=False)
            if z.state == INSIDE and presence == HOME:
                row[1] += 1
            elif presence == HOME:
                row[2] += 1
            elif presence == AWAY:
                row[3] += 1
    nights = []
    for zone_id in sorted(windows):
        for i, (a, b) in enumerate(windows[zone_id]):
            n, inside, overlapping, away = counts.get((zone_id, i), [0, 0, 0, 0])
            beacon = any(s < b and a < e for s, e in beacon_home)
            nights.append(PresenceNight(zone_id, a, b, n, inside, overlapping, away, beacon))
    return nights


@dataclass(frozen=True, slots=True)
class Episode:
    """An alert as far as overlap is concerned."""

    type: str
    zone_id: int | None
    device_id: str | None
    start: float
    end: float | None


def late_episodes(
    window: Sequence[Observation],
    zones: Mapping[int, ZoneMeta],
    thresholds: Thresholds,
    now: float,
    existing: Sequence[Episode],
    margin_s: float = 0.0,
    *,
    home_beacon: str | None = None,
    live: SubjectState | None = None,
) -> list[AlertChange]:
    """Episodes that fixes arriving out of order reveal, and that no alert already covers.

    The window (the late observations with the stored ones around them) is evaluated from a
    fresh state, apart from the live state: late data never disturbs the episodes live data
    opened, and an episode already alerted is never raised again. What is new comes back as its
    changes (open, updates, clear) marked late. Given the ``live`` state, its dwell runs still
    in progress learn what the replay found (_count_late_in_dwell).
    """
    replayed = SubjectState()
    changes = run_rules(replayed, window, zones, thresholds, now, home_beacon=home_beacon)
    by_key: dict[str, list[AlertChange]] = {}
    for change in changes:
        by_key.setdefault(change.episode_key, []).append(change)
    out: list[AlertChange] = []
    for key_changes in by_key.values():
        opened = next((c for c in key_changes if c.action == "open"), None)
        if opened is None:
            continue
        start = opened.first_fix_at if opened.first_fix_at is not None else opened.at
        cleared = next((c.at for c in key_changes if c.action == "clear"), None)
        end = cleared if cleared is not None else float("inf")
        covered = any(
            e.type == opened.type
            and e.zone_id == opened.zone_id
            and (opened.zone_id is not None or e.device_id == opened.device_id)
            and e.start - margin_s <= end
            and (e.end if e.end is not None else float("inf")) + margin_s >= start
            for e in existing
        )
        if covered:
            continue
        for change in key_changes:
            if change.action == "update" and change is not key_changes[-1]:
                continue
            out.append(_as_late(change))
    if live is not None:
        _count_late_in_dwell(live, replayed, {c.episode_key for c in out if c.action == "open"})
    return out


def _count_late_in_dwell(
    live: SubjectState, replayed: SubjectState, raised: Collection[str]
) -> None:
    """Let late fixes count in the live state's dwell runs still in progress.

    A late fix is judged in a replay of its window (late_episodes), but the live state never
    saw it: when the fixes of an entry arrive out of order (a store-and-forward upload; two
    ingest workers on a round robin), the replay could hold too few of them to open the episode
    and the live run counted one short when its last fix came, so nothing was raised; or the
    replay opened it (raised late) while the live run went on counting and opened it again.
    Where the replay's run for a zone and a live run not yet opened end at the same fix, the
    live run takes the replay's: its count and start when they are larger (runs the replay cut
    at its window's start count fewer and change nothing), or the episode the replay opened and
    ``raised`` (its episode keys) now, so that the fixes after it update that alert."""
    for key, track in live.tracks.items():
        if track.episode is not None or track.last is None:
            continue
        replay = replayed.tracks.get(key)
        if replay is None or replay.last != track.last:
            continue
        if replay.episode is not None:
            if replay.episode in raised:
                track.episode, track.opened = replay.episode, replay.opened
                track.count = replay.count
                track.n, track.first, track.worst = replay.n, replay.first, replay.worst
                track.clear_n, track.clear_first = replay.clear_n, replay.clear_first
            continue
        if replay.n > track.n:
            track.n = replay.n
            if replay.first is not None and (track.first is None or replay.first < track.first):
                track.first = replay.first


def _as_late(change: AlertChange) -> AlertChange:
    return AlertChange(
        action=change.action,
        episode_key=change.episode_key,
        type=change.type,
        at=change.at,
        first_fix_at=change.first_fix_at,
        zone_id=change.zone_id,
        device_id=change.device_id,
        lon=change.lon,
        lat=change.lat,
        acc=change.acc,
        distance_m=change.distance_m,
        fix_count=change.fix_count,
        late=True,
        details=change.details,
    )


__all__ = [
    "CONSISTENT",
    "UNVERIFIED",
    "VERIFIED",
    "EventObs",
    "PresenceNight",
    "RawFix",
    "active_windows",
    "late_episodes",
    "observe",
    "presence_nights",
]
