"""Device behaviour: what an ankle tag or a phone sends, and when, given the truth.

A device model turns a subject's true trajectory, the sky above them and a script of incidents
(strap cut, coverage gap, jamming, a flat battery...) into the exact publications the device
would make. It is a small discrete-event simulation driven by the device's own clock, which is
passed in: no broker, no wall clock. The behaviours are those FIELD.md describes:

- a tag fixes every 60 s, every 15 s in pursuit; out of coverage it buffers and uploads late in
  `{"fixes": [...]}` batches once the link is back, after re-announcing itself `online`;
- a tag reports `gps_lost` after 10 minutes without a GNSS fix (talking on with heartbeats and
  Wi-Fi or cell positions), `gps_restored` with the next one; jamming is detected within a
  minute; the battery drains (faster in pursuit), charges, warns low at 20 % and critical at 5 %,
  then the tag says `power_off` and goes silent;
- a phone (OwnTracks) samples its position every ~30 s and publishes on movement beyond 100 m,
  or on a timer of a few minutes, longer when the phone has been still (Android doze); out of
  coverage it queues messages and sends them one by one when back.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tagwatch.simulators.geo import LonLat, distance_m
from tagwatch.simulators.movement import Trajectory, TruePosition
from tagwatch.simulators.noise import (
    Conditions,
    Fallback,
    NoiseProfile,
    Observation,
    Sky,
)
from tagwatch.simulators.noise_models import DEFAULT_NOISE_MODEL, make_receiver
from tagwatch.simulators.wire import (
    LinkAction,
    LinkChange,
    Publication,
    Will,
    batches,
    encode,
    owntracks_will,
    tag_topic,
    tag_will,
)


class DeviceKind(StrEnum):
    TAG = "tag"
    PHONE = "phone"
    VICTIM_PHONE = "victim_phone"


class IncidentKind(StrEnum):
    STRAP_CUT = "strap_cut"
    STRAP_RESTORED = "strap_restored"
    CASE_TAMPER = "case_tamper"
    LEFT_BEHIND = "left_behind"  # the device stays where it is; its wearer goes on
    COVERAGE_GAP = "coverage_gap"
    JAMMING = "jamming"
    GPS_DENIED = "gps_denied"
    INDOOR = "indoor"
    URBAN = "urban"
    PURSUIT = "pursuit"
    CHARGE = "charge"
    POWER_OFF = "power_off"
    PANIC = "panic"  # the alarm button (a victim's panic device): a `panic` event


INSTANT_INCIDENTS = frozenset(
    {
        IncidentKind.STRAP_CUT,
        IncidentKind.STRAP_RESTORED,
        IncidentKind.CASE_TAMPER,
        IncidentKind.LEFT_BEHIND,
        IncidentKind.PANIC,
    }
)
TAG_ONLY_INCIDENTS = frozenset(
    {
        IncidentKind.STRAP_CUT,
        IncidentKind.STRAP_RESTORED,
        IncidentKind.CASE_TAMPER,
        IncidentKind.PURSUIT,
        # a phone's panic is an OwnTracks message the decoder maps (docs/phones.md), not yet
        # simulated: a panic button speaks the tag contract
        IncidentKind.PANIC,
    }
)


@dataclass(frozen=True)
class Incident:
    """A scripted happening; ranged kinds have `end` (None: until the scenario ends)."""

    kind: IncidentKind
    start: float
    end: float | None = None
    acc_m: float | None = None  # indoor: median reported accuracy
    jump_probability: float | None = None  # indoor / urban: multipath episode start rate
    interval_s: float | None = None  # pursuit: the fix interval
    fallback: Fallback | None = None  # jamming / gps_denied: what is reported without GNSS


@dataclass(frozen=True)
class Battery:
    """A day to two between charges (FIELD.md): 2.5 %/h for a tag, faster in pursuit."""

    start_pct: float = 90.0
    drain_pct_per_h: float = 2.5
    charge_pct_per_h: float = 50.0
    low_pct: float = 20.0
    critical_pct: float = 5.0
    pursuit_factor: float = 1.6


def home_beacon_id(*parts: str) -> str:
    """A home beacon unit's id (its serial, as a supervisor approves it for the subject), fresh
    per home and stable for the same ``parts`` (run, subject, place): short enough for the
    platform's 64 characters whatever the scenario's name."""
    return "HB-" + hashlib.sha256(":".join(parts).encode()).hexdigest()[:12].upper()


@dataclass(frozen=True)
class DeviceSpec:
    """One device's resolved behaviour, as a scenario declares it."""

    device_id: str
    kind: DeviceKind
    interval_s: float = 60.0
    pursuit_interval_s: float = 15.0
    battery: Battery = field(default_factory=Battery)
    incidents: tuple[Incident, ...] = ()
    home_beacon: str | None = None  # place name whose stays the tag's home beacon sees
    beacon_id: str | None = None  # that beacon's id, named in the events' detail
    ts_format: str = "epoch"  # or "rfc3339": the contract allows both
    owntracks_topic: str | None = None
    tid: str | None = None
    noise: NoiseProfile | None = None
    gps_lost_after_s: float = 600.0
    heartbeat_s: float = 300.0
    sample_s: float = 30.0  # phones: how often the OS hands the app a position
    move_trigger_m: float = 100.0
    timer_s: tuple[float, float] = (180.0, 420.0)
    doze_timer_s: tuple[float, float] = (300.0, 840.0)
    sends_acc: bool = True  # phones: False leaves `acc` out of every location message

    @property
    def is_tag(self) -> bool:
        return self.kind is DeviceKind.TAG

    def will(self, connected_at: float) -> Will:
        if self.is_tag:
            return tag_will(self.device_id)
        assert self.owntracks_topic is not None
        return owntracks_will(self.owntracks_topic, connected_at)


@dataclass
class DeviceTimeline:
    publications: list[Publication] = field(default_factory=list)
    links: list[LinkChange] = field(default_factory=list)
    observations: list[tuple[float, Observation]] = field(default_factory=list)


class _BatteryLevel:
    """Piecewise-linear charge level; reports the exact moments thresholds are crossed."""

    def __init__(self, spec: Battery) -> None:
        self.spec = spec
        self.level = spec.start_pct
        self.low_armed = spec.start_pct > spec.low_pct
        self.critical_armed = spec.start_pct > spec.critical_pct

    def advance(
        self, t0: float, t1: float, charging: bool, pursuit: bool
    ) -> list[tuple[float, str]]:
        spec = self.spec
        hours = max(0.0, t1 - t0) / 3600.0
        crossings: list[tuple[float, str]] = []
        if charging:
            self.level = min(100.0, self.level + spec.charge_pct_per_h * hours)
            if self.level > spec.low_pct + 5.0:
                self.low_armed = True
            if self.level > spec.critical_pct + 5.0:
                self.critical_armed = True
            return crossings
        rate = spec.drain_pct_per_h * (spec.pursuit_factor if pursuit else 1.0)
        before = self.level
        self.level = max(0.0, before - rate * hours)
        for threshold, name in (
            (spec.low_pct, "battery_low"),
            (spec.critical_pct, "battery_critical"),
            (0.0, "dead"),
        ):
            armed = {
                "battery_low": self.low_armed,
                "battery_critical": self.critical_armed,
                "dead": True,
            }[name]
            if armed and before > threshold >= self.level and rate > 0:
                crossings.append((t0 + (before - threshold) / rate * 3600.0, name))
                if name == "battery_low":
                    self.low_armed = False
                elif name == "battery_critical":
                    self.critical_armed = False
        return crossings


# Moment kinds, in the order they are handled when they fall on the same instant.
_START, _INSTANT, _END, _JAM_DETECT, _BEACON, _BOOT, _TICK = range(7)


class _DeviceRun:
    """The state of one device while its clock runs from the scenario start to its end."""

    def __init__(
        self,
        spec: DeviceSpec,
        trajectory: Trajectory,
        start: float,
        end: float,
        rng: random.Random,
        noise_model: str = DEFAULT_NOISE_MODEL,
    ) -> None:
        self.spec = spec
        self.trajectory = trajectory
        self.start, self.end = start, end
        self.rng = rng
        self.receiver = make_receiver(
            noise_model, spec.is_tag, spec.noise, random.Random(rng.getrandbits(64))
        )
        self.out = DeviceTimeline()
        self.battery = _BatteryLevel(spec.battery)
        self.clock = start
        self.seq = 0
        self.powered = True
        self.linked = True
        self.active: dict[int, Incident] = {}
        self.left_at: LonLat | None = None
        self.jam_detected = False
        self.gps_lost = False
        self.last_gnss_at = start
        self.last_sent_at = start
        self.tick_generation = 0
        self.fix_buffer: list[dict[str, Any]] = []
        self.event_buffer: list[dict[str, Any]] = []
        self.phone_queue: list[tuple[float, bytes]] = []
        self.last_published: LonLat | None = None
        self.last_published_at = -math.inf
        self.next_timer_s = 0.0
        self.still_since = start
        self.moments: list[tuple[float, int, int, Any]] = []
        self._order = 0

    # -- scheduling ---------------------------------------------------------------------------
    def push(self, at: float, kind: int, payload: Any = None) -> None:
        self._order += 1
        heapq.heappush(self.moments, (at, kind, self._order, payload))

    def run(self) -> DeviceTimeline:
        for index, incident in enumerate(self.spec.incidents):
            if incident.kind in INSTANT_INCIDENTS:
                self.push(incident.start, _INSTANT, incident)
            else:
                self.push(incident.start, _START, index)
                if incident.end is not None:
                    self.push(incident.end, _END, index)
        if self.spec.is_tag and self.spec.home_beacon is not None:
            for stay in self.trajectory.stays():
                if stay.place == self.spec.home_beacon:
                    self.push(stay.start + self.rng.uniform(10.0, 40.0), _BEACON, "enter")
                    self.push(stay.end + self.rng.uniform(10.0, 40.0), _BEACON, "leave")
        self.linked = not self._in(IncidentKind.COVERAGE_GAP, self.start)
        if self._in(IncidentKind.POWER_OFF, self.start):
            self.powered = False
        if self.powered and self.linked:
            self.connect(self.start)
        first = self.spec.interval_s if self.spec.is_tag else self.spec.sample_s
        self.push(self.start + self.rng.uniform(0.0, first), _TICK, self.tick_generation)
        while self.moments:
            at, kind, _, payload = heapq.heappop(self.moments)
            if at >= self.end:
                break
            self.advance_battery(at)
            if kind == _TICK:
                if payload == self.tick_generation and self.powered:
                    self.tick(at)
            elif kind == _START:
                self.begin(at, payload)
            elif kind == _END:
                self.finish(at, payload)
            elif kind == _INSTANT:
                self.instant(at, payload)
            elif kind == _JAM_DETECT:
                if self.jamming_now() and not self.jam_detected:
                    self.jam_detected = True
                    self.event(at, "jamming_detected", {"source": "gnss"})
            elif kind == _BEACON:
                detail = None if self.spec.beacon_id is None else {"beacon": self.spec.beacon_id}
                self.event(at, f"beacon_home_{payload}", detail)
            elif kind == _BOOT:
                self.boot(at)
        return self.out

    def _in(self, kind: IncidentKind, t: float) -> bool:
        return any(
            i.kind is kind and i.start <= t and (i.end is None or t < i.end)
            for i in self.spec.incidents
        )

    def _active(self, kind: IncidentKind) -> Incident | None:
        for incident in self.active.values():
            if incident.kind is kind:
                return incident
        return None

    def jamming_now(self) -> bool:
        return self._active(IncidentKind.JAMMING) is not None

    def pursuit_now(self) -> bool:
        return self._active(IncidentKind.PURSUIT) is not None

    def interval(self) -> float:
        if not self.spec.is_tag:
            return self.spec.sample_s + self.rng.uniform(-5.0, 5.0)
        pursuit = self._active(IncidentKind.PURSUIT)
        if pursuit is not None:
            return pursuit.interval_s or self.spec.pursuit_interval_s
        return self.spec.interval_s

    def restart_ticks(self, at: float) -> None:
        self.tick_generation += 1
        self.push(at, _TICK, self.tick_generation)

    # -- power and link -----------------------------------------------------------------------
    def advance_battery(self, t: float) -> None:
        if t <= self.clock:
            return
        charging = self._active(IncidentKind.CHARGE) is not None
        if not self.powered and not charging:
            self.clock = t  # switched off or flat: nothing drains
            return
        crossings = self.battery.advance(self.clock, t, charging, self.pursuit_now())
        self.clock = t
        if not self.powered:
            return
        for at, name in crossings:
            if name == "dead":
                self.event(at, "power_off", {"reason": "battery"}, latency=(0.2, 0.8))
                self.power_down(at + 1.0)
                return
            self.event(at, name)

    def power_down(self, at: float) -> None:
        if self.linked and self.powered:
            self.out.links.append(LinkChange(at, self.spec.device_id, LinkAction.DROP))
        self.powered = False
        self.tick_generation += 1

    def boot(self, at: float) -> None:
        if self.powered or self._active(IncidentKind.POWER_OFF) is not None:
            return
        if self.battery.level <= 0.0:
            return
        self.powered = True
        self.receiver.restart()
        self.last_gnss_at = at
        self.linked = self._active(IncidentKind.COVERAGE_GAP) is None
        if self.linked:
            self.connect(at)
        self.restart_ticks(at + 5.0)

    def connect(self, at: float) -> None:
        spec = self.spec
        self.out.links.append(LinkChange(at, spec.device_id, LinkAction.CONNECT, spec.will(at)))
        if spec.is_tag:
            self.publish(at + 0.2, tag_topic(spec.device_id, "status"), b"online", retain=True)
            sent = at + 1.0
            for payload in batches(self.fix_buffer, "fixes"):
                self.publish(sent, tag_topic(spec.device_id, "fix"), payload)
                sent += 0.2
            for payload in batches(self.event_buffer, "events"):
                self.publish(sent, tag_topic(spec.device_id, "event"), payload)
                sent += 0.2
            self.fix_buffer.clear()
            self.event_buffer.clear()
        else:
            sent = at + 0.5
            for _, payload in self.phone_queue:
                self.publish(sent, spec.owntracks_topic or "", payload)
                sent += 0.05
            self.phone_queue.clear()

    def recall_after(self, at: float) -> None:
        """Messages still in flight when the link goes were never sent: back to the buffer."""
        sent = self.out.publications
        recent = sent[-32:]
        in_flight = sorted((p for p in recent if p.at > at), key=lambda p: p.at)
        if not in_flight:
            return
        sent[-len(recent) :] = [p for p in recent if p.at <= at]
        for publication in in_flight:
            if not self.spec.is_tag:
                self.phone_queue.append((at, publication.payload))
            elif publication.topic.endswith("/fix"):
                self.fix_buffer.append(json.loads(publication.payload))
            elif publication.topic.endswith("/event"):
                self.event_buffer.append(json.loads(publication.payload))

    def publish(self, at: float, topic: str, payload: bytes, retain: bool = False) -> None:
        self.out.publications.append(
            Publication(at, self.spec.device_id, topic, payload, retain=retain, qos=1)
        )
        self.last_sent_at = max(self.last_sent_at, at)

    # -- incidents ----------------------------------------------------------------------------
    def begin(self, at: float, index: int) -> None:
        incident = self.spec.incidents[index]
        self.active[index] = incident
        kind = incident.kind
        if kind is IncidentKind.COVERAGE_GAP:
            if self.linked and self.powered:
                self.out.links.append(LinkChange(at, self.spec.device_id, LinkAction.DROP))
                self.recall_after(at)
            self.linked = False
        elif kind is IncidentKind.JAMMING:
            self.push(at + self.rng.uniform(20.0, 60.0), _JAM_DETECT)
        elif kind is IncidentKind.PURSUIT:
            if self.powered:
                self.restart_ticks(at)
        elif kind is IncidentKind.CHARGE:
            if self.powered:
                self.event(at + 2.0, "charging_started")
            else:
                self.push(at + 60.0, _BOOT)
        elif kind is IncidentKind.POWER_OFF and self.powered:
            self.event(at, "power_off", {"reason": "switched_off"}, latency=(0.2, 0.8))
            self.power_down(at + 1.0)

    def finish(self, at: float, index: int) -> None:
        incident = self.active.pop(index, None)
        if incident is None:
            return
        kind = incident.kind
        if kind is IncidentKind.COVERAGE_GAP:
            if self.powered and self._active(IncidentKind.COVERAGE_GAP) is None:
                self.linked = True
                self.connect(at)
        elif kind is IncidentKind.JAMMING:
            if self.jam_detected:
                self.jam_detected = False
                self.event(at + self.rng.uniform(5.0, 30.0), "jamming_cleared")
        elif kind is IncidentKind.PURSUIT:
            if self.powered:
                self.restart_ticks(at + self.spec.interval_s)
        elif kind is IncidentKind.CHARGE:
            if self.powered:
                self.event(at + 2.0, "charging_stopped")
        elif kind is IncidentKind.POWER_OFF:
            self.push(at + 30.0, _BOOT)

    def instant(self, at: float, incident: Incident) -> None:
        kind = incident.kind
        if kind is IncidentKind.LEFT_BEHIND:
            here = self.trajectory.at(at)
            self.left_at = (here.lon, here.lat)
        elif kind is IncidentKind.STRAP_CUT:
            self.event(at, "strap_tamper", {"strap": "cut"})
        elif kind is IncidentKind.STRAP_RESTORED:
            self.event(at, "strap_restored")
        elif kind is IncidentKind.CASE_TAMPER:
            self.event(at, "case_tamper", {"case": "opened"})
        elif kind is IncidentKind.PANIC:
            self.event(at, "panic", {"button": "pressed"})

    # -- what is sent -------------------------------------------------------------------------
    def timestamp(self, t: float) -> float | str:
        if self.spec.ts_format == "rfc3339":
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
        return round(t, 3)

    def event(
        self,
        at: float,
        kind: str,
        detail: dict[str, Any] | None = None,
        latency: tuple[float, float] = (1.0, 8.0),
    ) -> None:
        """Tags only: phones have no event channel in OwnTracks' location format."""
        if not self.spec.is_tag or not self.powered:
            return
        self.seq += 1
        message: dict[str, Any] = {
            "ts": self.timestamp(at),
            "type": kind,
            "seq": self.seq,
            "batt": round(self.battery.level),
        }
        if detail is not None:
            message["detail"] = detail
        if self.linked:
            self.publish(
                at + self.rng.uniform(*latency),
                tag_topic(self.spec.device_id, "event"),
                encode(message),
            )
        elif kind != "heartbeat":
            self.event_buffer.append(message)

    def position(self, t: float) -> TruePosition:
        if self.left_at is not None:
            lon, lat = self.left_at
            return TruePosition(lon, lat, 0.0, None, None, Sky.OPEN, None, None)
        return self.trajectory.at(t)

    def conditions(self, here: TruePosition) -> Conditions:
        sky, indoor_acc, jump = here.sky, here.indoor_acc_m, None
        fallback: Fallback | None = Fallback.WIFI
        urban = self._active(IncidentKind.URBAN)
        if urban is not None:
            sky, jump = Sky.URBAN, urban.jump_probability
        indoor = self._active(IncidentKind.INDOOR)
        if indoor is not None:
            sky, indoor_acc, jump = Sky.INDOOR, indoor.acc_m or indoor_acc, indoor.jump_probability
        denied = self._active(IncidentKind.GPS_DENIED)
        if denied is not None:
            sky, fallback = Sky.DENIED, denied.fallback
        jamming = self._active(IncidentKind.JAMMING)
        if jamming is not None:
            sky, fallback = Sky.JAMMED, jamming.fallback
        return Conditions(sky, indoor_acc, jump, fallback)

    def tick(self, t: float) -> None:
        self.push(t + self.interval(), _TICK, self.tick_generation)
        here = self.position(t)
        observation = self.receiver.observe(t, here.lon, here.lat, self.conditions(here))
        if observation is not None:
            self.out.observations.append((t, observation))
        if self.spec.is_tag:
            self.tag_tick(t, here, observation)
        else:
            self.phone_tick(t, here, observation)

    def tag_tick(self, t: float, here: TruePosition, observation: Observation | None) -> None:
        if observation is not None and observation.src == "gps":
            if self.gps_lost:
                self.gps_lost = False
                self.event(t, "gps_restored")
            self.last_gnss_at = t
        elif not self.gps_lost and t - self.last_gnss_at >= self.spec.gps_lost_after_s:
            self.gps_lost = True
            self.event(t, "gps_lost")
        if observation is None:
            if self.linked and t - self.last_sent_at >= self.spec.heartbeat_s:
                self.event(t, "heartbeat")
            return
        self.seq += 1
        fix: dict[str, Any] = {
            "ts": self.timestamp(t),
            "lat": round(observation.lat, 7),
            "lon": round(observation.lon, 7),
            "acc": round(observation.acc_m, 1),
            "seq": self.seq,
        }
        if observation.src == "gps":
            speed = max(0.0, here.speed_mps + self.rng.gauss(0.0, 0.2))
            if here.speed_mps == 0.0:
                speed = abs(self.rng.gauss(0.0, 0.15))
            fix["spd"] = round(speed, 2)
            if here.heading_deg is not None:
                fix["hdg"] = round((here.heading_deg + self.rng.gauss(0.0, 4.0)) % 360.0, 1)
            fix["sats"] = observation.sats
        fix["batt"] = round(self.battery.level)
        fix["src"] = observation.src
        if self.linked:
            self.publish(
                t + self.rng.uniform(0.3, 2.5), tag_topic(self.spec.device_id, "fix"), encode(fix)
            )
        else:
            self.fix_buffer.append(fix)

    def phone_tick(self, t: float, here: TruePosition, observation: Observation | None) -> None:
        if here.speed_mps > 0.5:
            self.still_since = t
        if observation is None:
            return
        point = (observation.lon, observation.lat)
        moved = (
            self.last_published is None
            or distance_m(point, self.last_published) >= self.spec.move_trigger_m
        )
        timer = t - self.last_published_at >= self.next_timer_s
        if not (moved or timer):
            return
        self.last_published, self.last_published_at = point, t
        dozing = t - self.still_since > 600.0
        self.next_timer_s = self.rng.uniform(
            *(self.spec.doze_timer_s if dozing else self.spec.timer_s)
        )
        spec = self.spec
        charging = self._active(IncidentKind.CHARGE) is not None
        message: dict[str, Any] = {
            "_type": "location",
            "tid": spec.tid or spec.device_id[-2:],
            "lat": round(observation.lat, 7),
            "lon": round(observation.lon, 7),
            "tst": int(t),
            "acc": max(1, round(observation.acc_m)),
            "batt": round(self.battery.level),
            "bs": 2 if charging else 1,
            "vel": round(here.speed_mps * 3.6),
            "conn": "w" if here.sky is Sky.INDOOR else "m",
            "m": 1,
            "created_at": int(t),
        }
        if not spec.sends_acc:
            del message["acc"]
        if here.heading_deg is not None:
            message["cog"] = round(here.heading_deg) % 360
        # A report on the phone's own timer is a fresh position: no `t` ("a missing `t` element
        # also indicates an automatic location update", booklet tech/json.md). It used to say
        # `t: "p"`, but a ping republishes the last position with a new `tst` (the Android
        # app's SendLocationPingWorker), which the platform rightly never takes as a fix.
        payload = encode(message)
        if self.linked:
            self.publish(t + self.rng.uniform(0.5, 3.0), spec.owntracks_topic or "", payload)
        else:
            self.phone_queue.append((t, payload))


def simulate_device(
    spec: DeviceSpec,
    trajectory: Trajectory,
    start: float,
    end: float,
    rng: random.Random,
    noise_model: str = DEFAULT_NOISE_MODEL,
) -> DeviceTimeline:
    """Everything one device sends between `start` and `end` (device clock, epoch seconds),
    its positions drawn from the named noise model (noise_models.NOISE_MODELS); the same rng
    draws happen before the receiver is made, so the models differ only in the noise."""
    timeline = _DeviceRun(spec, trajectory, start, end, rng, noise_model).run()
    timeline.publications.sort(key=lambda p: p.at)
    timeline.links.sort(key=lambda link: link.at)
    return timeline
