"""The rule core: geofence classifications and device events in, episodes out. Pure, no I/O.

Each (subject, zone, condition) has a small state machine driven in fix-time order:

* a fix is *violating*, *clear* or *unknown* for the condition (an UNCERTAIN classification, a
  stale victim position: unknown, never evidence either way);
* an episode opens after a dwell: ``n`` consecutive violating fixes, or at least two spanning
  ``s`` seconds (unknown fixes neither count nor reset; a clear fix resets; violating fixes more
  than ``pending_gap_s`` apart start the count again, so rare multipath jumps cannot add up);
* while it lasts, every violating fix updates it (last fix, count, worst distance);
* it closes after the clear dwell, recording the time of the first clear fix, or at once when
  the condition stops applying (a curfew window ended, the zone was removed).

A fix whose accuracy is unknown (NaN: an OwnTracks location without `acc`) is communication and
a position the device has, never evidence: it touches no zone and no trail. Phones also report
their own state (``PhoneObs``: battery, charging, monitoring mode, connectivity, the broker's
last will), which drives the phone alerts (battery, phone_monitoring_degraded).

The episode key is made of the alert type, the zone or device and the fix time of the first
violating fix, so replaying the same fixes, in whatever batches, yields the same keys: the store
keeps one alert per key. State is plain data (``to_json``/``from_json``) so that it lives in the
database beside the fixes that changed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.batch import MODE_UNKNOWN
from tagwatch.alerts.thresholds import Thresholds
from tagwatch.geofence import INSIDE, OUTSIDE, UNCERTAIN

TRAIL_FIXES: Final = 30
VIOLATING: Final = 1
CLEAR: Final = -1
ENDED: Final = -2  # the condition no longer applies: close at once
UNKNOWN: Final = 0
HOME: Final = 1  # curfew presence (see curfew_presence), or UNKNOWN
AWAY: Final = 2


@dataclass(frozen=True, slots=True)
class ZoneObs:
    """One classification row for one fix (see geofence.Classification)."""

    zone_id: int
    state: int
    in_band: bool
    distance_m: float
    active: bool
    stale: bool = False


@dataclass(frozen=True, slots=True)
class ZoneMeta:
    """What the rules need to know of a zone. ``shared`` zones (global or group exclusion zones)
    only get classification rows near them; a fix without a row is confidently outside them."""

    zone_id: int
    kind: str
    buffer_m: float | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    name: str = ""
    shared: bool = False


@dataclass(frozen=True, slots=True)
class FixObs:
    ts: float
    device_id: str
    lon: float
    lat: float
    acc: float
    zones: tuple[ZoneObs, ...] = ()
    src: str = "gps"


@dataclass(frozen=True, slots=True)
class EventObs:
    ts: float
    device_id: str
    type: str
    beacon: str | None = None  # the beacon a beacon_home_* event names (its `detail.beacon`)


@dataclass(frozen=True, slots=True)
class PhoneObs:
    """A phone's report about itself (see alerts.batch.NewPhoneReports for the fields)."""

    ts: float
    device_id: str
    kind: str  # location, ping, lwt, message
    batt: float = math.nan
    charging: int = 0
    mode: int = MODE_UNKNOWN
    conn: str = ""


Observation = FixObs | EventObs | PhoneObs

CHARGING: Final = frozenset({2, 3})  # OwnTracks `bs`: charging, full
DEGRADED_MODES: Final = {-1: "quiet", 0: "manual"}  # OwnTracks `m` that stop reporting
MOVE: Final = 2
ONLINE: Final = frozenset({"w", "m"})  # OwnTracks `conn`: wifi, mobile data
BATTERY_HYSTERESIS: Final = 5.0


@dataclass(frozen=True, slots=True)
class AlertChange:
    """``open``, ``update`` or ``clear`` of one episode. ``at`` is the fix or event time that made
    the change (for clock rules, the rule clock); ``first_fix_at`` the first evidence."""

    action: str
    episode_key: str
    type: str
    at: float
    first_fix_at: float | None = None
    zone_id: int | None = None
    device_id: str | None = None
    lon: float | None = None
    lat: float | None = None
    acc: float | None = None
    distance_m: float | None = None
    fix_count: int = 0
    late: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return v.SEVERITY[self.type]


@dataclass(slots=True)
class Track:
    n: int = 0
    first: float | None = None
    last: float | None = None
    clear_n: int = 0
    clear_first: float | None = None
    episode: str | None = None
    opened: float | None = None
    count: int = 0
    worst: float | None = None
    seen_state: int | None = None
    seen_at: float | None = None
    # Curfew tracks only: where the subject is *established* to be (HOME, AWAY, None not known)
    # and the run of away fixes that establishes "away". The clock rule trusts only this, never
    # ``seen_state``, which one multipath jump can set.
    established: int | None = None
    established_at: float | None = None
    away_n: int = 0
    away_first: float | None = None
    away_last: float | None = None
    # The device whose fixes showed the subject away: while it says so, another device's fix
    # at home (a phone left on the kitchen table) neither clears nor breaks that evidence.
    away_device: str | None = None


@dataclass(slots=True)
class DeviceState:
    expected_interval_s: float = 60.0
    last_msg: float | None = None
    last_heard: float | None = None
    last_fix: float | None = None
    gps_lost_since: float | None = None
    gps_restored_at: float | None = None  # the device said GNSS is back: a fix is on its way
    episodes: dict[str, str] = field(default_factory=dict)
    episode_first: dict[str, float] = field(default_factory=dict)
    # phones (PhoneObs): the last report's time, mode and connectivity; when the broker said
    # the connection was lost (lwt) after the phone was last heard; the first fix of the
    # current run of fixes without accuracy
    phone_ts: float | None = None
    phone_mode: int = MODE_UNKNOWN
    phone_conn: str = ""
    offline_at: float | None = None
    unknown_acc_since: float | None = None


@dataclass(slots=True)
class SubjectState:
    tracks: dict[str, Track] = field(default_factory=dict)
    devices: dict[str, DeviceState] = field(default_factory=dict)
    # The approved home beacon in range (an enter naming ``beacon_id``, no leave since). Trusted
    # only while ``beacon_id`` is still the subject's approved beacon (Evaluator.at_beacon); a
    # state saved before beacons were approved has no id and is never trusted.
    beacon_home: bool = False
    beacon_id: str | None = None
    watermark: float | None = None
    trail: list[tuple[float, float, float, float]] = field(default_factory=list)
    # A victim's state (alerts/victim_rules.py): the victim's own devices, the open panic
    # ([episode key, first press, last press]) and protection-degraded ([key, since]) episodes,
    # and on which subjects (and zones) each open episode's alert was raised. An offender's
    # document never carries these keys.
    victim: bool = False
    watchers: dict[str, list[list[int | None]]] = field(default_factory=dict)
    panic: list[Any] | None = None
    degraded: list[Any] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tracks": {k: _slots(t) for k, t in self.tracks.items()},
            "devices": {k: _slots(d) for k, d in self.devices.items()},
            "beacon_home": self.beacon_home,
            "beacon_id": self.beacon_id,
            "watermark": self.watermark,
            "trail": [list(p) for p in self.trail],
        }
        if self.victim:
            doc.update(
                victim=True, watchers=self.watchers, panic=self.panic, degraded=self.degraded
            )
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> SubjectState:
        if not data:
            return cls()
        return cls(
            tracks={k: Track(**t) for k, t in data.get("tracks", {}).items()},
            devices={k: _device_of(d) for k, d in data.get("devices", {}).items()},
            beacon_home=bool(data.get("beacon_home", False)),
            beacon_id=data.get("beacon_id"),
            watermark=data.get("watermark"),
            trail=[(p[0], p[1], p[2], p[3]) for p in data.get("trail", [])],
            victim=bool(data.get("victim", False)),
            watchers={k: [list(w) for w in ws] for k, ws in data.get("watchers", {}).items()},
            panic=_copy(data.get("panic")),
            degraded=_copy(data.get("degraded")),
        )

    def device(self, device_id: str) -> DeviceState:
        state = self.devices.get(device_id)
        if state is None:
            state = self.devices[device_id] = DeviceState()
        return state

    @property
    def last_position(self) -> tuple[float, float, float, float] | None:
        return self.trail[-1] if self.trail else None


def _device_of(data: Mapping[str, Any]) -> DeviceState:
    """A device's state owning its containers: the rules mutate them, and the document they came
    from must stay what was read (the engine compares it with the new one to skip a write)."""
    fields = dict(data)
    for name in ("episodes", "episode_first"):
        if name in fields:
            fields[name] = dict(fields[name])
    return DeviceState(**fields)


def _copy(value: list[Any] | None) -> list[Any] | None:
    return None if value is None else list(value)


def _slots(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _ms(ts: float) -> int:
    return round(ts * 1000)


# -- zone conditions ---------------------------------------------------------------------------

_OUTSIDE_FAR = ZoneObs(0, OUTSIDE, in_band=False, distance_m=float("inf"), active=True)


def _verdicts(meta: ZoneMeta, z: ZoneObs, acc: float, beacon_home: bool) -> list[tuple[str, int]]:
    """(condition, verdict) pairs for one classification row.

    Evidence for a violation must be beyond the boundary by ``evidence_acc_multiple`` x acc; a
    confident fix short of that is unknown, neither evidence nor an all-clear.
    """
    kind = meta.kind
    margin = meta.thresholds.evidence_acc_multiple * acc
    d = z.distance_m
    deep_in = z.state == INSIDE and -d >= margin
    far_out = z.state == OUTSIDE and d >= margin
    if kind in ("exclusion", "victim"):
        conds = ["entry", "warn"] if meta.buffer_m else ["entry"]
        if not z.active:
            return [(c, ENDED) for c in conds]
        if z.stale:
            return [(c, UNKNOWN) for c in conds]
        entry = VIOLATING if deep_in else CLEAR if z.state == OUTSIDE else UNKNOWN
        out = [("entry", entry)]
        if meta.buffer_m:
            if z.state == INSIDE or (z.in_band and d + margin <= meta.buffer_m):
                warn = VIOLATING
            elif z.state == OUTSIDE and d - acc >= meta.buffer_m:
                warn = CLEAR
            else:
                warn = UNKNOWN
            out.append(("warn", warn))
        return out
    if kind == "inclusion":
        if not z.active:
            return [("exit", ENDED)]
        return [("exit", VIOLATING if far_out else CLEAR if z.state == INSIDE else UNKNOWN)]
    if kind == "curfew":
        if not z.active:
            return [("curfew", ENDED)]
        presence = curfew_presence(meta, z, acc, beacon_home)
        return [
            ("curfew", VIOLATING if presence == AWAY else CLEAR if presence == HOME else UNKNOWN)
        ]
    return []


def curfew_presence(meta: ZoneMeta, z: ZoneObs, acc: float, beacon_home: bool) -> int:
    """HOME, AWAY or UNKNOWN for one fix against a curfew (home) zone, whether or not the window
    is on.

    Away needs the evidence any episode needs: the whole accuracy circle outside the home and
    beyond it by ``evidence_acc_multiple`` x acc. Home needs only consistency: a fix whose
    accuracy circle overlaps the home (INSIDE or UNCERTAIN) keeps the subject home, because in a
    home smaller than the accuracy the tag reports indoors (tens of metres of plot, 40-150 m of
    ``acc``) no fix can ever be wholly inside, and treating those fixes as "unknown" left a
    jumped fix as the last word all night. A circle so wide it says nothing (a cell position,
    ``acc`` above ``presence_max_acc_m``) is unknown; so is a fix just outside, short of the
    margin, and an indoor-class fix (``acc`` above ``away_max_acc_m``) far outside: indoors the
    reported accuracy understates the error, so only an outdoor-quality fix proves a departure.
    An approved home beacon in range is home whatever GPS says.
    """
    if beacon_home:
        return HOME
    if z.stale:
        return UNKNOWN
    t = meta.thresholds
    d = z.distance_m
    if z.state == OUTSIDE and d >= t.evidence_acc_multiple * acc and acc <= t.away_max_acc_m:
        return AWAY
    if z.state in (INSIDE, UNCERTAIN) and acc <= t.presence_max_acc_m:
        return HOME
    return UNKNOWN


def _alert_type(kind: str, cond: str) -> str:
    if kind == "victim":
        return v.VICTIM_PROXIMITY if cond == "entry" else v.VICTIM_WARNING
    if kind == "exclusion":
        return v.EXCLUSION_ENTRY if cond == "entry" else v.EXCLUSION_WARNING
    if kind == "inclusion":
        return v.INCLUSION_EXIT
    return v.CURFEW_VIOLATION


def _dwell(meta: ZoneMeta, cond: str) -> tuple[int, float]:
    t = meta.thresholds
    if cond == "warn":
        return t.warning_fixes, t.warning_s
    if cond == "exit":
        return t.exit_fixes, t.exit_s
    if cond == "curfew":
        return t.curfew_fixes, t.curfew_s
    if meta.kind == "victim":
        return t.victim_fixes, t.victim_s
    return t.entry_fixes, t.entry_s


class Evaluator:
    """Runs observations through one subject's state; collects the changes.

    ``home_beacon`` is the subject's approved home beacon (None: none approved); beacon events
    count as presence only when they name it (see `beacon`)."""

    def __init__(
        self,
        state: SubjectState,
        zones: Mapping[int, ZoneMeta],
        thresholds: Thresholds,
        now: float,
        home_beacon: str | None = None,
    ) -> None:
        self.state = state
        self.zones = zones
        self.thresholds = thresholds
        self.now = now
        self.home_beacon = home_beacon
        self.changes: list[AlertChange] = []

    def at_beacon(self) -> bool:
        """Is the subject's approved home beacon in range? An enter of a beacon that is no
        longer the approved one (approval cleared or replaced since) does not count."""
        state = self.state
        return (
            state.beacon_home
            and state.beacon_id is not None
            and state.beacon_id == self.home_beacon
        )

    def _late(self, ts: float) -> bool:
        return self.now - ts > self.thresholds.late_after_s

    # -- fixes

    def fix(self, fix: FixObs) -> None:
        state = self.state
        dev = state.device(fix.device_id)
        self._heard(dev, fix.device_id, fix.ts)
        dev.last_fix = fix.ts if dev.last_fix is None else max(dev.last_fix, fix.ts)
        if fix.src == "gps":
            dev.gps_lost_since = None
            self._device_clear(fix.device_id, v.GPS_LOST, fix.ts)
        if math.isnan(fix.acc):
            self._unknown_accuracy(fix.device_id, dev, fix.ts)
            return
        if dev.unknown_acc_since is not None:
            dev.unknown_acc_since = None
            self._device_clear(fix.device_id, v.POSITION_ACCURACY_UNKNOWN, fix.ts)
        state.trail.append((fix.ts, fix.lon, fix.lat, fix.acc))
        if len(state.trail) > TRAIL_FIXES:
            del state.trail[: len(state.trail) - TRAIL_FIXES]
        seen: set[int] = set()
        at_beacon = self.at_beacon()
        for z in fix.zones:
            meta = self.zones.get(z.zone_id)
            if meta is None:
                continue
            seen.add(z.zone_id)
            for cond, verdict in _verdicts(meta, z, fix.acc, at_beacon):
                self._track(meta, cond, verdict, fix, z)
        for key in list(state.tracks):
            zone_id = int(key.split("/", 1)[0])
            if zone_id in seen:
                continue
            track = state.tracks[key]
            meta = self.zones.get(zone_id)
            cond = key.split("/", 1)[1]
            if meta is None:
                if track.episode is not None:
                    self._close(track, key, _alert_type(_kind_of(cond), cond), zone_id, fix.ts)
                del state.tracks[key]
            elif meta.shared and (track.n or track.episode):
                for c, verdict in _verdicts(meta, _OUTSIDE_FAR, fix.acc, at_beacon):
                    if c == cond:
                        self._track(meta, cond, verdict, fix, _OUTSIDE_FAR)

    def _unknown_accuracy(self, device_id: str, dev: DeviceState, ts: float) -> None:
        """A fix without accuracy: once a device has sent only such fixes for
        ``unknown_accuracy_s``, no zone can be judged for it, and someone must know."""
        if dev.unknown_acc_since is None or ts < dev.unknown_acc_since:
            dev.unknown_acc_since = ts
        if ts - dev.unknown_acc_since >= self.thresholds.unknown_accuracy_s:
            self._device_open(device_id, v.POSITION_ACCURACY_UNKNOWN, ts, dev.unknown_acc_since)

    def _track(self, meta: ZoneMeta, cond: str, verdict: int, fix: FixObs, z: ZoneObs) -> None:
        key = f"{meta.zone_id}/{cond}"
        track = self.state.tracks.get(key)
        if track is None:
            if verdict != VIOLATING and not (meta.kind == "curfew" and verdict != UNKNOWN):
                return  # nothing to remember about a zone the subject keeps clear of
            track = self.state.tracks[key] = Track()
        if z.state in (INSIDE, OUTSIDE) and not z.stale:
            track.seen_state, track.seen_at = z.state, fix.ts
        if meta.kind == "curfew":
            presence = curfew_presence(meta, z, fix.acc, self.at_beacon())
            if presence == HOME and self._left_behind(track, fix.device_id):
                return  # another device is home; the one that left has not come back
            self._presence(meta, track, presence, fix)
        alert_type = _alert_type(meta.kind, cond)
        deeper = cond in ("entry", "warn")
        distance = z.distance_m if z.distance_m == z.distance_m else None
        if verdict == VIOLATING:
            if distance is not None and distance != float("inf"):
                worse = track.worst is None or (
                    distance < track.worst if deeper else distance > track.worst
                )
                if worse:
                    track.worst = distance
            if track.episode is not None:
                track.count += 1
                track.clear_n, track.clear_first = 0, None
                track.last = fix.ts
                self.changes.append(
                    self._zone_change("update", track, alert_type, meta, fix, fix.ts)
                )
                return
            gap = self._evidence_gap(meta, cond, fix.device_id)
            if track.n == 0 or track.last is None or fix.ts - track.last > gap:
                track.n, track.first = 1, fix.ts
                track.worst = distance if distance != float("inf") else None
            else:
                track.n += 1
            track.last = fix.ts
            fixes, seconds = _dwell(meta, cond)
            assert track.first is not None
            if track.n >= fixes or (track.n >= 2 and fix.ts - track.first >= seconds):
                track.episode = f"{alert_type}:z{meta.zone_id}:{_ms(track.first)}"
                track.opened, track.count = track.first, track.n
                track.clear_n, track.clear_first = 0, None
                self.changes.append(self._zone_change("open", track, alert_type, meta, fix, fix.ts))
            return
        track.n, track.first = 0, None  # an unknown fix breaks the run of evidence too
        if verdict == UNKNOWN:
            return
        if track.episode is None:
            if meta.kind != "curfew":
                del self.state.tracks[key]
            else:
                track.worst = None
            return
        if verdict == ENDED:
            self._close(track, key, alert_type, meta.zone_id, fix.ts)
            return
        track.clear_n += 1
        if track.clear_first is None:
            track.clear_first = fix.ts
        t = meta.thresholds
        if track.clear_n >= t.clear_fixes or (
            track.clear_n >= 2 and fix.ts - track.clear_first >= t.clear_s
        ):
            self._close(track, key, alert_type, meta.zone_id, track.clear_first)

    def _evidence_gap(self, meta: ZoneMeta, cond: str, device_id: str) -> float:
        """How far apart two violating fixes may be and still add up to a dwell.

        ``pending_gap_s`` for zones. For a curfew, silence is the ordinary state of a tag indoors
        at home (no fix there, or none for a while), so two multipath jumps with nothing but
        silence between them must not make "away": away fixes add up only at the device's own
        rhythm (``no_communication_intervals`` of its reporting interval, at least ``curfew_s``,
        at most ``pending_gap_s``): 180 s for a tag at 60 s, 900 s for a phone at 15 minutes.
        """
        t = meta.thresholds
        if cond != "curfew":
            return self.thresholds.pending_gap_s
        interval = self.state.device(device_id).expected_interval_s
        rhythm = max(t.curfew_s, t.no_communication_intervals * interval)
        return min(self.thresholds.pending_gap_s, rhythm)

    def _left_behind(self, track: Track, device_id: str) -> bool:
        """Is ``device_id`` at home while the subject's other device, the one that showed him
        away, has not come back? A subject with a tag and a phone who leaves the phone at home
        is not home: only the device that left can show the return (or a home beacon, which
        makes every fix HOME before this is asked). A device no longer held pins nothing."""
        away = track.away_device
        return (
            away is not None
            and away != device_id
            and away in self.state.devices
            and (track.away_n > 0 or track.established == AWAY or track.episode is not None)
        )

    def _presence(self, meta: ZoneMeta, track: Track, presence: int, fix: FixObs) -> None:
        """Keep the curfew track's established presence, in and out of the curfew window (a
        subject who left before the window opened and went silent is still away).

        Away is established by a dwell's worth of away fixes (the curfew dwell, runs broken by
        unknown fixes and by silences longer than the device's rhythm, see _evidence_gap), so
        one multipath jump, or two with silence between them, never establishes it. One fix
        consistent with home ends it: the error that costs here is a curfew violation raised
        all night on a subject asleep at home.
        """
        if presence == HOME:
            track.away_n, track.away_first, track.away_last = 0, None, None
            track.established, track.established_at = HOME, fix.ts
            track.away_device = None
            return
        if presence != AWAY:
            track.away_n, track.away_first, track.away_last = 0, None, None
            return
        gap = self._evidence_gap(meta, "curfew", fix.device_id)
        track.away_device = fix.device_id
        if track.away_n == 0 or track.away_last is None or fix.ts - track.away_last > gap:
            track.away_n, track.away_first = 1, fix.ts
        else:
            track.away_n += 1
        track.away_last = fix.ts
        fixes, seconds = _dwell(meta, "curfew")
        assert track.away_first is not None
        dwelt = track.away_n >= fixes or (
            track.away_n >= 2 and fix.ts - track.away_first >= seconds
        )
        if dwelt and track.established != AWAY:
            track.established, track.established_at = AWAY, track.away_first

    def _zone_change(
        self, action: str, track: Track, alert_type: str, meta: ZoneMeta, fix: FixObs, at: float
    ) -> AlertChange:
        assert track.episode is not None
        return AlertChange(
            action=action,
            episode_key=track.episode,
            type=alert_type,
            at=at,
            first_fix_at=track.opened,
            zone_id=meta.zone_id,
            device_id=fix.device_id,
            lon=fix.lon,
            lat=fix.lat,
            acc=fix.acc,
            distance_m=track.worst,
            fix_count=track.count,
            late=self._late(at),
            details={"zone_name": meta.name} if meta.name else {},
        )

    def _close(self, track: Track, key: str, alert_type: str, zone_id: int, at: float) -> None:
        assert track.episode is not None
        self.changes.append(
            AlertChange(
                action="clear",
                episode_key=track.episode,
                type=alert_type,
                at=at,
                first_fix_at=track.opened,
                zone_id=zone_id,
                distance_m=track.worst,
                fix_count=track.count,
            )
        )
        track.episode, track.opened, track.count, track.worst = None, None, 0, None
        track.clear_n, track.clear_first = 0, None
        if not key.endswith("/curfew"):
            self.state.tracks.pop(key, None)

    # -- events

    def event(self, event: EventObs) -> None:
        dev = self.state.device(event.device_id)
        self._heard(dev, event.device_id, event.ts)
        kind = event.type
        if kind in v.EVENT_OPENS:
            self._device_open(event.device_id, v.EVENT_OPENS[kind], event.ts, event.ts)
        for alert_type in v.EVENT_CLEARS.get(kind, ()):
            self._device_clear(event.device_id, alert_type, event.ts)
        if kind == "gps_lost" and dev.gps_lost_since is None:
            dev.gps_lost_since = event.ts
        elif kind == "gps_restored":
            dev.gps_lost_since = None
            dev.gps_restored_at = max(event.ts, dev.gps_restored_at or event.ts)
        elif kind in ("beacon_home_enter", "beacon_home_leave"):
            self.beacon(event)
        self._gps_check(event.device_id, dev, event.ts)

    def beacon(self, event: EventObs) -> None:
        """A home beacon event. The tag's credentials are in the wearer's hands, so an enter is
        a claim: it counts only when it names the subject's approved beacon. An enter without a
        beacon id is not trusted either: it would make any tag that says "home" home, which is
        exactly the forgery the approval exists to stop. A leave is believed whatever it names
        (or not): it only withdraws the beacon's word, so GPS decides again, and a forged leave
        can only make the rules stricter. Untrusted events are still stored and still count as
        the device being heard (`event`)."""
        state = self.state
        if event.type == "beacon_home_leave":
            state.beacon_home, state.beacon_id = False, None
        elif self.home_beacon is not None and event.beacon == self.home_beacon:
            state.beacon_home, state.beacon_id = True, event.beacon

    def _heard(self, dev: DeviceState, device_id: str, ts: float) -> None:
        dev.last_msg = ts if dev.last_msg is None else max(dev.last_msg, ts)
        dev.last_heard = self.now if dev.last_heard is None else max(dev.last_heard, self.now)
        dev.offline_at = None
        self._device_clear(device_id, v.NO_COMMUNICATION, self.now)

    # -- phones

    def phone(self, obs: PhoneObs) -> None:
        """A phone's report about itself. Every report but the broker's last will is
        communication; only the newest report's state counts (an older one arriving late
        says nothing about now)."""
        dev = self.state.device(obs.device_id)
        if obs.kind == "lwt":
            # The broker speaks, not the phone: the connection was lost. Silence is still
            # judged by no_communication (iOS drops its connection in the background all the
            # time, so the will alone is no alert); the alert then says when the link went.
            dev.offline_at = self.now
            return
        self._heard(dev, obs.device_id, obs.ts)
        if dev.phone_ts is not None and obs.ts < dev.phone_ts:
            return
        dev.phone_ts = obs.ts
        if obs.kind not in ("location", "ping"):
            return
        dev.phone_conn = obs.conn
        dev.phone_mode = obs.mode
        self._phone_battery(obs)
        degraded = DEGRADED_MODES.get(obs.mode)
        if degraded is not None:
            self._device_open(
                obs.device_id,
                v.PHONE_MONITORING_DEGRADED,
                obs.ts,
                obs.ts,
                details={"reason": f"monitoring_{degraded}", "monitoring": obs.mode},
            )
        else:
            self._device_clear(obs.device_id, v.PHONE_MONITORING_DEGRADED, obs.ts)

    def _phone_battery(self, obs: PhoneObs) -> None:
        """The tag battery alerts, from the phone's own `batt` and `bs`: charging (or full)
        clears them; so does a level back above the threshold by a margin (no flapping)."""
        t = self.thresholds
        if obs.charging in CHARGING:
            for alert_type in (v.BATTERY_LOW, v.BATTERY_CRITICAL):
                self._device_clear(obs.device_id, alert_type, obs.ts)
            return
        if math.isnan(obs.batt):
            return
        for alert_type, limit in (
            (v.BATTERY_CRITICAL, t.phone_battery_critical_pct),
            (v.BATTERY_LOW, t.phone_battery_low_pct),
        ):
            if obs.batt <= limit:
                dev = self.state.device(obs.device_id)
                if alert_type not in dev.episodes:
                    self._device_open(
                        obs.device_id, alert_type, obs.ts, obs.ts, details={"batt": obs.batt}
                    )
            elif obs.batt >= limit + BATTERY_HYSTERESIS:
                self._device_clear(obs.device_id, alert_type, obs.ts)

    def _gps_check(self, device_id: str, dev: DeviceState, ts: float) -> None:
        """Talking without a fix: from a gps_lost event, or simply from the last fix."""
        since = dev.gps_lost_since
        if since is None and dev.last_fix is not None:
            # measured from the last fix, or from the restoration the device announced since
            since = max(dev.last_fix, dev.gps_restored_at or dev.last_fix)
        if since is not None and ts - since >= self.thresholds.gps_lost_after_s:
            self._device_open(device_id, v.GPS_LOST, ts, since)

    def _device_open(
        self,
        device_id: str,
        alert_type: str,
        at: float,
        first: float,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        dev = self.state.device(device_id)
        key = dev.episodes.get(alert_type)
        pos = self.state.last_position
        if key is None:
            key = f"{alert_type}:d{device_id}:{_ms(first)}"
            dev.episodes[alert_type] = key
            dev.episode_first[alert_type] = first
            action = "open"
        else:
            action = "update"
        self.changes.append(
            AlertChange(
                action=action,
                episode_key=key,
                type=alert_type,
                at=at,
                first_fix_at=dev.episode_first[alert_type],
                device_id=device_id,
                late=self._late(at) if alert_type != v.NO_COMMUNICATION else False,
                lon=pos[1] if pos else None,
                lat=pos[2] if pos else None,
                acc=pos[3] if pos else None,
                details=details or {},
            )
        )

    def _device_clear(self, device_id: str, alert_type: str, at: float) -> None:
        dev = self.state.device(device_id)
        key = dev.episodes.pop(alert_type, None)
        if key is None:
            return
        first = dev.episode_first.pop(alert_type, None)
        self.changes.append(
            AlertChange(
                action="clear",
                episode_key=key,
                type=alert_type,
                at=at,
                first_fix_at=first,
                device_id=device_id,
            )
        )

    # -- the clock

    def tick(
        self, curfew_zones: Sequence[int], curfew_active: Callable[[int, float], bool]
    ) -> None:
        """Rules that fire on time passing: silence, talking without fixes, curfew while away."""
        now, t = self.now, self.thresholds
        for device_id, dev in self.state.devices.items():
            if dev.last_heard is None:
                continue
            limit = t.silence_limit_s(dev.expected_interval_s)
            if now - dev.last_heard > limit and v.NO_COMMUNICATION not in dev.episodes:
                lost = {} if dev.offline_at is None else {"connection_lost_at": dev.offline_at}
                self._device_open(
                    device_id, v.NO_COMMUNICATION, now, dev.last_heard + limit, details=lost
                )
            if (
                dev.phone_mode == MOVE
                and dev.phone_conn in ONLINE
                and now - dev.last_heard > t.phone_move_silence_s
                and v.PHONE_MONITORING_DEGRADED not in dev.episodes
            ):
                # its last report promised more (move mode, online), and none came
                self._device_open(
                    device_id,
                    v.PHONE_MONITORING_DEGRADED,
                    now,
                    dev.last_heard + t.phone_move_silence_s,
                    details={"reason": "silent_in_move_mode", "conn": dev.phone_conn},
                )
            if dev.gps_lost_since is not None and now - dev.last_heard <= limit:
                # the device said it lost GPS and is still talking: time passes on its clock too
                self._gps_check(device_id, dev, (dev.last_msg or now) + (now - dev.last_heard))
        for zone_id in curfew_zones:
            meta = self.zones.get(zone_id)
            if meta is None or meta.kind != "curfew":
                continue
            key = f"{meta.zone_id}/curfew"
            track = self.state.tracks.get(key)
            active = curfew_active(meta.zone_id, now)
            if track is not None and track.episode is not None:
                if not active:
                    self._close(track, key, v.CURFEW_VIOLATION, meta.zone_id, now)
                continue
            if not active or self.at_beacon():
                continue
            heard = [d.last_heard for d in self.state.devices.values() if d.last_heard is not None]
            silent_for = now - max(heard) if heard else float("inf")
            # Silence alone is a communication problem (no_communication, gps_lost): only a
            # subject established away (see curfew_presence) is in breach while silent.
            away = track is not None and track.established == AWAY
            if heard and silent_for >= meta.thresholds.curfew_s and away:
                assert track is not None
                track.episode = f"{v.CURFEW_VIOLATION}:z{meta.zone_id}:{_ms(now)}"
                track.opened, track.count = now, 0
                pos = self.state.last_position
                self.changes.append(
                    AlertChange(
                        action="open",
                        episode_key=track.episode,
                        type=v.CURFEW_VIOLATION,
                        at=now,
                        first_fix_at=None,
                        zone_id=meta.zone_id,
                        lon=pos[1] if pos else None,
                        lat=pos[2] if pos else None,
                        acc=pos[3] if pos else None,
                        details={"reason": "silent_away", "zone_name": meta.name},
                    )
                )

    def due_at(self, has_curfew: bool) -> float | None:
        """The next rule-clock time at which tick() could change something."""
        t = self.thresholds
        times: list[float] = []
        for dev in self.state.devices.values():
            if dev.last_heard is None:
                continue
            if v.NO_COMMUNICATION not in dev.episodes:
                times.append(dev.last_heard + t.silence_limit_s(dev.expected_interval_s) + 1)
            if (
                dev.phone_mode == MOVE
                and dev.phone_conn in ONLINE
                and v.PHONE_MONITORING_DEGRADED not in dev.episodes
            ):
                times.append(dev.last_heard + t.phone_move_silence_s + 1)
            if v.GPS_LOST not in dev.episodes and dev.gps_lost_since is not None:
                times.append(dev.last_heard + t.gps_lost_after_s)
        if has_curfew:
            times.append(self.now + 60.0)
        return min(times) if times else None


def _kind_of(cond: str) -> str:
    return {"entry": "exclusion", "warn": "exclusion", "exit": "inclusion"}.get(cond, "curfew")


def order_key(obs: Observation) -> tuple[float, int, str]:
    """Fix-time order; at one instant events before fixes (a tamper explains the fix after it),
    and a phone's report of itself after its fix (its alerts carry that position)."""
    rank = 0 if isinstance(obs, EventObs) else 1 if isinstance(obs, FixObs) else 2
    return (obs.ts, rank, obs.device_id)


def evaluate(
    state: SubjectState,
    observations: Iterable[Observation],
    zones: Mapping[int, ZoneMeta],
    thresholds: Thresholds,
    now: float,
    *,
    home_beacon: str | None = None,
) -> list[AlertChange]:
    """Run observations (any order; sorted here) through ``state``, which is updated in place.
    ``home_beacon``: the subject's approved home beacon, if any (see Evaluator.beacon)."""
    ev = Evaluator(state, zones, thresholds, now, home_beacon)
    for obs in sorted(observations, key=order_key):
        if isinstance(obs, FixObs):
            ev.fix(obs)
        elif isinstance(obs, PhoneObs):
            ev.phone(obs)
        else:
            ev.event(obs)
        if state.watermark is None or obs.ts > state.watermark:
            state.watermark = obs.ts
    return ev.changes


def tick(
    state: SubjectState,
    zones: Mapping[int, ZoneMeta],
    thresholds: Thresholds,
    now: float,
    curfew_zones: Sequence[int] = (),
    curfew_active: Callable[[int, float], bool] = lambda _zone, _t: False,
    *,
    home_beacon: str | None = None,
) -> tuple[list[AlertChange], float | None]:
    """The clock rules for one subject; returns the changes and the next due time."""
    ev = Evaluator(state, zones, thresholds, now, home_beacon)
    ev.tick(curfew_zones, curfew_active)
    return ev.changes, ev.due_at(bool(curfew_zones))


def due_at(
    state: SubjectState,
    zones: Mapping[int, ZoneMeta],
    thresholds: Thresholds,
    now: float,
    *,
    has_curfew: bool = False,
) -> float | None:
    return Evaluator(state, zones, thresholds, now).due_at(has_curfew)


def episodes(changes: Sequence[AlertChange]) -> dict[str, AlertChange]:
    """The last change of each episode, keyed by episode key, with its open's first_fix_at."""
    out: dict[str, AlertChange] = {}
    for change in changes:
        out[change.episode_key] = change
    return out
