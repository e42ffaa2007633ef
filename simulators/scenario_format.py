"""The scenario format: what a scenario file may say, read into a declared `Scenario`.

Every check a scenario author can trip lives here, and every message names the file, the path
to the entry (`devices[2].battery.capacity_mah`) and what was expected, so a typo in a TOML file
is fixed from the message alone. Window checks that need the resolved clock (an expectation
both expected and forbidden) are in `scenario_plan.check_rules`; itinerary timing errors show
when `scenario_timeline.build_timeline` lays out the trip. docs/simulators.md is the reference.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shapely.geometry import shape

from tagwatch.alerts.vocabulary import ALERT_TYPES  # the contract's alert types, one list
from tagwatch.simulators.devices import (
    INSTANT_INCIDENTS,
    TAG_ONLY_INCIDENTS,
    Battery,
    DeviceKind,
    IncidentKind,
)
from tagwatch.simulators.geo import LonLat, box_ring
from tagwatch.simulators.movement import (
    Mode,
    Place,
)
from tagwatch.simulators.noise import Fallback, Sky
from tagwatch.simulators.schedule import (
    CURFEW_DEFAULT,
    DAY_SETS,
    DAYS,
    DatedException,
    Schedule,
    Window,
)

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"

ZONE_KINDS = ("exclusion", "inclusion", "curfew", "victim")
ROLES = ("offender", "victim")
PHONE_EXPECTED_INTERVAL_S = 900  # the longest regular silence of an OwnTracks phone (doze)
VICTIM_RADIUS_M = 500.0  # FIELD.md: Spain's default victim exclusion distance
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
RUN_PATTERN = re.compile(r"^[A-Za-z0-9]{1,8}$")
REGION_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
CLOCK = re.compile(r"^(?:day\s*(\d+)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class ScenarioError(ValueError):
    """A scenario file that does not validate; the message names the file and the entry."""


# -- time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSpec:
    """A moment as written: "+2h30m" (after the start), "22:00" or "day 2 07:00" (local clock,
    scenario zone), or an RFC 3339 time with offset."""

    text: str
    offset_s: float | None = None
    day: int | None = None
    clock: time | None = None
    absolute: datetime | None = None


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a duration like '90s', '15m', '2h30m', '1d'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = DURATION.match(value.strip())
        if match and any(match.groups()):
            days, hours, minutes, seconds = match.groups()
            return (
                int(days or 0) * 86400
                + int(hours or 0) * 3600
                + int(minutes or 0) * 60
                + float(seconds or 0)
            )
    raise ScenarioError(f"{where}: {value!r} is not a duration like '90s', '15m', '2h30m', '1d'")


def parse_time(value: Any, where: str) -> TimeSpec:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ScenarioError(f"{where}: {value} has no UTC offset; add one, e.g. +02:00")
        return TimeSpec(value.isoformat(), absolute=value)
    if isinstance(value, time):
        return TimeSpec(value.isoformat(), clock=value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            return TimeSpec(text, offset_s=parse_duration(text[1:], where))
        match = CLOCK.match(text)
        if match:
            day, hour, minute, second = match.groups()
            if int(hour) > 23 or int(minute) > 59:
                raise ScenarioError(f"{where}: {text!r} is not a clock time")
            clock = time(int(hour), int(minute), int(second or 0))
            return TimeSpec(text, day=int(day) if day else None, clock=clock)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                raise ScenarioError(f"{where}: {text!r} has no UTC offset; add one, e.g. +02:00")
            return TimeSpec(text, absolute=parsed)
    raise ScenarioError(
        f"{where}: {value!r} is not a time: use '+2h' (after the start), '22:00', 'day 2 07:00' "
        "or an RFC 3339 time with offset"
    )


@dataclass(frozen=True)
class Clock:
    """Resolves `TimeSpec`s for one run: the scenario may be replayed on another date, which
    moves every moment by whole local days so that 22:00 stays 22:00 in the subject's zone."""

    start: datetime
    tz: ZoneInfo
    day_shift: int = 0

    def resolve(self, spec: TimeSpec, not_before: float | None = None) -> float:
        """Epoch seconds. A bare clock time is its first occurrence at or after `not_before`
        (default: the start), so "from 23:00 to 01:00" means what it says."""
        if spec.offset_s is not None:
            return self.start.timestamp() + spec.offset_s
        if spec.absolute is not None:
            local = spec.absolute.astimezone(self.tz).replace(tzinfo=None)
            moved = local + timedelta(days=self.day_shift)
            return moved.replace(tzinfo=self.tz).timestamp()
        assert spec.clock is not None
        first_day = self.start.astimezone(self.tz).date()
        if spec.day is not None:
            day = first_day + timedelta(days=spec.day - 1)
            return datetime.combine(day, spec.clock, tzinfo=self.tz).timestamp()
        anchor = self.start.timestamp() if not_before is None else not_before
        day = datetime.fromtimestamp(anchor, self.tz).date()
        while True:
            moment = datetime.combine(day, spec.clock, tzinfo=self.tz).timestamp()
            if moment >= anchor:
                return moment
            day += timedelta(days=1)

    def local_days(self, end: float) -> list[date]:
        first = self.start.astimezone(self.tz).date()
        last = datetime.fromtimestamp(end, self.tz).date()
        return [first + timedelta(days=k) for k in range((last - first).days + 1)]


# -- the declared scenario ------------------------------------------------------------------


@dataclass(frozen=True)
class RegionDecl:
    id: str
    name: str


@dataclass(frozen=True)
class StopDecl:
    """One itinerary entry as written: `at` a place, `go` somewhere, or `stay` where one is."""

    kind: str  # "at", "go", "stay"
    where: str
    place: str | None = None
    point: LonLat | None = None
    until: TimeSpec | None = None
    duration_s: float | None = None
    leave: TimeSpec | None = None
    arrive: TimeSpec | None = None
    mode: Mode = Mode.FOOT
    via: tuple[LonLat, ...] = ()
    sky: Sky | None = None
    indoor_acc_m: float | None = None
    speed_mps: float | None = None
    direct: bool = False


@dataclass(frozen=True)
class RoutineDecl:
    home: str
    work: str | None
    shops: tuple[str, ...]
    leave: time
    work_until: time
    home_by: time
    shop_chance: float


@dataclass(frozen=True)
class RegionChangeDecl:
    at: TimeSpec
    region: str


@dataclass(frozen=True)
class SubjectDecl:
    key: str
    name: str
    region: str
    timezone: str
    itinerary: tuple[StopDecl, ...]
    routine: RoutineDecl | None
    region_changes: tuple[RegionChangeDecl, ...]


@dataclass(frozen=True)
class IncidentDecl:
    kind: IncidentKind
    where: str
    start: TimeSpec
    end: TimeSpec | None
    acc_m: float | None
    jump_probability: float | None
    interval_s: float | None
    fallback: Fallback | None
    daily: bool


@dataclass(frozen=True)
class DeviceDecl:
    key: str
    kind: DeviceKind
    subject: str
    role: str
    interval_s: float
    pursuit_interval_s: float
    battery: Battery
    incidents: tuple[IncidentDecl, ...]
    home_beacon: str | None
    ts_format: str


@dataclass(frozen=True)
class ZoneDecl:
    key: str
    name: str
    kind: str
    subject: str | None
    victim: str | None
    region: str | None
    geometry: dict[str, Any] | None
    radius_m: float | None
    buffer_m: float
    schedule: Schedule | None


@dataclass(frozen=True)
class ExpectDecl:
    alert: str
    subject: str
    after: TimeSpec | None
    before: TimeSpec | None
    late: bool | None
    within_s: float | None
    why: str


@dataclass(frozen=True)
class RuleDecl:
    alerts: frozenset[str] | None  # None: any alert
    subject: str | None
    after: TimeSpec | None
    before: TimeSpec | None
    why: str


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    seed: int
    start: datetime
    duration_s: float
    timezone: str
    regions: tuple[RegionDecl, ...]
    places: Mapping[str, Place]
    subjects: tuple[SubjectDecl, ...]
    devices: tuple[DeviceDecl, ...]
    zones: tuple[ZoneDecl, ...]
    expect: tuple[ExpectDecl, ...]
    forbid: tuple[RuleDecl, ...]
    allow: tuple[RuleDecl, ...]
    source: str = "<memory>"

    def clock(self, on_date: date | None = None) -> Clock:
        tz = ZoneInfo(self.timezone)
        local = self.start.astimezone(tz)
        if on_date is None:
            return Clock(local, tz)
        moved = datetime.combine(on_date, local.time(), tzinfo=tz)
        return Clock(moved, tz, (on_date - local.date()).days)


# -- reading TOML ---------------------------------------------------------------------------


class _Node:
    """A TOML table being read: typed getters that name the entry, and a check for typos."""

    def __init__(self, raw: Any, where: str, source: str) -> None:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{source}: {where}: expected a table")
        self.raw = raw
        self.where = where
        self.source = source
        self.seen: set[str] = set()

    def fail(self, message: str, key: str | None = None) -> ScenarioError:
        where = f"{self.where}.{key}" if key and self.where else key or self.where
        return ScenarioError(f"{self.source}: {where or 'top level'}: {message}")

    def at(self, key: str) -> str:
        return f"{self.source}: {self.where}.{key}" if self.where else f"{self.source}: {key}"

    def get(self, key: str, default: Any = ..., kinds: tuple[type, ...] = ()) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            if default is ...:
                raise self.fail("is required", key)
            return default
        value = self.raw[key]
        if kinds and (
            not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        ):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(f"expected {names}, got {value!r}", key)
        return value

    def text(self, key: str, default: Any = ...) -> Any:
        return self.get(key, default, (str,))

    def number(self, key: str, default: Any = ..., low: float = -math.inf) -> Any:
        value = self.get(key, default, (int, float))
        if value is not None and value is not default and value < low:
            raise self.fail(f"must be at least {low}, got {value}", key)
        return None if value is None else float(value)

    def flag(self, key: str, default: Any = ...) -> Any:
        return self.get(key, default, (bool,))

    def tables(self, key: str) -> list[_Node]:
        items = self.get(key, [], (list,))
        return [
            _Node(item, f"{self.where + '.' if self.where else ''}{key}[{i}]", self.source)
            for i, item in enumerate(items)
        ]

    def time(self, key: str) -> TimeSpec | None:
        self.seen.add(key)
        if key not in self.raw:
            return None
        return parse_time(self.raw[key], self.at(key))

    def duration(self, key: str) -> float | None:
        self.seen.add(key)
        if key not in self.raw:
            return None
        return parse_duration(self.raw[key], self.at(key))

    def point(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, default, (list,))
        return value if value is None or value is default else _lonlat(value, self.at(key))

    def choice(self, key: str, options: Sequence[str], default: Any = ...) -> Any:
        value = self.text(key, default)
        if value is not None and value not in options:
            raise self.fail(f"{value!r} is not one of {', '.join(options)}", key)
        return value

    def close(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                close = difflib.get_close_matches(key, sorted(self.seen), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(f"unknown key{hint}", key)


def _lonlat(value: Any, where: str) -> LonLat:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ScenarioError(f"{where}: expected [lon, lat], got {value!r}")
    lon, lat = float(value[0]), float(value[1])
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ScenarioError(f"{where}: [{lon}, {lat}] is not [lon, lat] in WGS84 degrees")
    return (lon, lat)


def _clock_of_day(value: Any, where: str) -> time:
    spec = parse_time(value, where)
    if spec.clock is None or spec.day is not None:
        raise ScenarioError(f"{where}: expected a clock time like '07:30'")
    return spec.clock


def read_scenario(raw: Mapping[str, Any], source: str = "<memory>") -> Scenario:
    """The declared scenario, every entry checked; `scenario.parse_scenario` adds the window
    checks that need the plan (kept there so this module does not depend on the plan)."""
    top = _Node(dict(raw), "", source)
    name = top.text("name")
    if not NAME_PATTERN.match(name):
        raise top.fail("must be lower-case letters, digits and '-', at most 32 long", "name")
    title = top.text("title", name)
    description = top.text("description", "")
    seed = top.get("seed", kinds=(int,))
    start_spec = parse_time(top.get("start"), top.at("start"))
    if start_spec.absolute is None:
        raise top.fail("must be an RFC 3339 time with offset", "start")
    duration = top.duration("duration")
    if duration is None or duration <= 0:
        raise top.fail("is required and must be positive", "duration")
    timezone = _zone(top.text("timezone"), top.at("timezone"))

    regions = []
    for node in top.tables("regions"):
        region = RegionDecl(node.text("id"), node.text("name", ""))
        if not REGION_PATTERN.match(region.id):
            raise node.fail("region ids are [A-Za-z0-9_.-]{1,64}", "id")
        regions.append(region)
        node.close()
    region_ids = _unique([r.id for r in regions], top, "regions")
    if not regions:
        raise top.fail("at least one [[regions]] entry is required", "regions")

    places: dict[str, Place] = {}
    places_node = _Node(top.get("places", {}, (dict,)), "places", source)
    for place_name in places_node.raw:
        entry = places_node.get(place_name, kinds=(dict, list))
        if isinstance(entry, list):
            lon, lat = _lonlat(entry, places_node.at(place_name))
            places[place_name] = Place(place_name, lon, lat)
            continue
        node = _Node(entry, f"places.{place_name}", source)
        lon, lat = node.number("lon"), node.number("lat")
        _lonlat([lon, lat], node.where)
        sky = Sky(
            node.choice("sky", [s.value for s in (Sky.INDOOR, Sky.URBAN, Sky.OPEN)], "indoor")
        )
        places[place_name] = Place(
            place_name, lon, lat, sky, node.number("indoor_acc_m", None, 1.0)
        )
        node.close()

    def place(value: str, where: str) -> str:
        if value not in places:
            known = ", ".join(sorted(places)) or "none"
            raise ScenarioError(f"{source}: {where}: unknown place {value!r} (places: {known})")
        return value

    subjects = [_subject(node, region_ids, place) for node in top.tables("subjects")]
    subject_keys = _unique([s.key for s in subjects], top, "subjects")
    if not subjects:
        raise top.fail("at least one [[subjects]] entry is required", "subjects")

    devices = [_device(node, subject_keys, place) for node in top.tables("devices")]
    _unique([d.key for d in devices], top, "devices")
    victims_with_phone = {d.subject for d in devices if d.kind is DeviceKind.VICTIM_PHONE}

    zones = [
        _zone_decl(node, subject_keys, region_ids, places, victims_with_phone)
        for node in top.tables("zones")
    ]
    _unique([z.key for z in zones], top, "zones")

    expect = [_expect(node, subject_keys) for node in top.tables("expect")]
    forbid = [_rule(node, subject_keys) for node in top.tables("forbid")]
    allow = [_rule(node, subject_keys) for node in top.tables("allow")]
    top.close()

    return Scenario(
        name=name,
        title=title,
        description=description,
        seed=seed,
        start=start_spec.absolute,
        duration_s=duration,
        timezone=timezone,
        regions=tuple(regions),
        places=places,
        subjects=tuple(subjects),
        devices=tuple(devices),
        zones=tuple(zones),
        expect=tuple(expect),
        forbid=tuple(forbid),
        allow=tuple(allow),
        source=source,
    )


def _zone(name: str, where: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScenarioError(f"{where}: unknown IANA time zone {name!r}") from exc
    return name


def _unique(keys: list[str], top: _Node, what: str) -> set[str]:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise top.fail(f"duplicate key {key!r}", what)
        seen.add(key)
    return seen


def _key(node: _Node) -> str:
    key = node.text("key")
    if not KEY_PATTERN.match(key):
        raise node.fail("keys are letters, digits, '_' and '-', at most 16 long", "key")
    return str(key)


def _subject(node: _Node, region_ids: set[str], place: Any) -> SubjectDecl:
    key = _key(node)
    region = node.text("region")
    if region not in region_ids:
        raise node.fail(f"unknown region {region!r}", "region")
    timezone = _zone(node.text("timezone"), node.at("timezone"))
    stops = []
    for index, item in enumerate(node.get("itinerary", [], (list,))):
        stops.append(_stop(_Node(item, f"{node.where}.itinerary[{index}]", node.source), place))
    routine = None
    routine_raw = node.get("routine", None, (dict,))
    if routine_raw is not None:
        r = _Node(routine_raw, f"{node.where}.routine", node.source)
        routine = RoutineDecl(
            home=place(r.text("home"), r.at("home")),
            work=None if r.text("work", None) is None else place(r.text("work"), r.at("work")),
            shops=tuple(place(s, r.at("shops")) for s in r.get("shops", [], (list,))),
            leave=_clock_of_day(r.get("leave", "07:30"), r.at("leave")),
            work_until=_clock_of_day(r.get("work_until", "17:00"), r.at("work_until")),
            home_by=_clock_of_day(r.get("home_by", "18:30"), r.at("home_by")),
            shop_chance=r.number("shop_chance", 0.5, 0.0),
        )
        r.close()
    if routine is None and not stops:
        raise node.fail("needs an `itinerary` or a `routine`", "itinerary")
    if routine is not None and stops:
        raise node.fail("give an `itinerary` or a `routine`, not both", "routine")
    if stops and stops[0].kind != "at":
        raise node.fail("the first stop must be `at` a place (where the day starts)", "itinerary")
    changes = []
    for change in node.tables("region_changes"):
        target = change.text("region")
        if target not in region_ids:
            raise change.fail(f"unknown region {target!r}", "region")
        spec = change.time("at")
        if spec is None:
            raise change.fail("is required", "at")
        changes.append(RegionChangeDecl(spec, target))
        change.close()
    display_name = node.text("name", key)
    node.close()
    return SubjectDecl(
        key,
        display_name,
        region,
        timezone,
        tuple(stops),
        routine,
        tuple(changes),
    )


STOP_KINDS = ("at", "go", "stay")


def _stop(node: _Node, place: Any) -> StopDecl:
    kinds = [k for k in STOP_KINDS if k in node.raw]
    if len(kinds) != 1:
        raise node.fail("each stop has exactly one of `at`, `go`, `stay`")
    kind = kinds[0]
    sky_value = node.choice("sky", [s.value for s in (Sky.INDOOR, Sky.URBAN, Sky.OPEN)], None)
    sky = None if sky_value is None else Sky(sky_value)
    indoor_acc = node.number("indoor_acc_m", None, 1.0)
    if kind == "at":
        decl = StopDecl(
            "at",
            node.where,
            place=place(node.text("at"), node.at("at")),
            until=node.time("until"),
            duration_s=node.duration("for"),
            sky=sky,
            indoor_acc_m=indoor_acc,
        )
    elif kind == "stay":
        decl = StopDecl(
            "stay",
            node.where,
            until=node.time("until"),
            duration_s=parse_duration(node.get("stay"), node.at("stay")),
            sky=sky,
            indoor_acc_m=indoor_acc,
        )
    else:
        target = node.get("go", kinds=(str, list))
        via = tuple(_lonlat(p, node.at("via")) for p in node.get("via", [], (list,)))
        decl = StopDecl(
            "go",
            node.where,
            place=place(target, node.at("go")) if isinstance(target, str) else None,
            point=None if isinstance(target, str) else _lonlat(target, node.at("go")),
            leave=node.time("leave"),
            arrive=node.time("arrive"),
            mode=Mode(node.choice("by", [m.value for m in Mode], "foot")),
            via=via,
            sky=sky,
            speed_mps=node.number("speed_mps", None, 0.1),
            direct=node.flag("direct", False),
        )
        if decl.leave is not None and decl.arrive is not None:
            raise node.fail("give `leave` or `arrive`, not both")
    if decl.until is not None and decl.duration_s is not None:
        raise node.fail("give `until` or `for`, not both")
    node.close()
    return decl


def _device(node: _Node, subject_keys: set[str], place: Any) -> DeviceDecl:
    key = _key(node)
    kind = DeviceKind(node.choice("kind", [k.value for k in DeviceKind]))
    subject = node.text("subject")
    if subject not in subject_keys:
        raise node.fail(f"unknown subject {subject!r}", "subject")
    default_role = "victim" if kind is DeviceKind.VICTIM_PHONE else "offender"
    role = node.choice("role", ROLES, default_role)
    interval = node.duration("interval") or 60.0
    pursuit = node.duration("pursuit_interval") or 15.0
    battery = Battery()
    battery_raw = node.get("battery", None, (dict,))
    if battery_raw is not None:
        b = _Node(battery_raw, f"{node.where}.battery", node.source)
        battery = Battery(
            start_pct=b.number("start", battery.start_pct, 0.0),
            drain_pct_per_h=b.number("drain_per_hour", battery.drain_pct_per_h, 0.0),
            charge_pct_per_h=b.number("charge_per_hour", battery.charge_pct_per_h, 0.0),
            low_pct=b.number("low", battery.low_pct, 0.0),
            critical_pct=b.number("critical", battery.critical_pct, 0.0),
        )
        if battery.start_pct > 100:
            raise b.fail("a battery starts at 100 % at most", "start")
        b.close()
    elif kind is not DeviceKind.TAG:
        battery = Battery(start_pct=80.0, drain_pct_per_h=1.5, charge_pct_per_h=40.0)
    incidents = []
    for index, item in enumerate(node.get("incidents", [], (list,))):
        incident = _incident(_Node(item, f"{node.where}.incidents[{index}]", node.source))
        if incident.kind in TAG_ONLY_INCIDENTS and kind is not DeviceKind.TAG:
            raise ScenarioError(
                f"{node.source}: {incident.where}: {incident.kind} happens to tags only"
            )
        incidents.append(incident)
    beacon = node.text("home_beacon", None)
    if beacon is not None:
        place(beacon, node.at("home_beacon"))
        if kind is not DeviceKind.TAG:
            raise node.fail("only tags have a home beacon", "home_beacon")
    ts_format = node.choice("ts_format", ["epoch", "rfc3339"], "epoch")
    node.close()
    return DeviceDecl(
        key,
        kind,
        subject,
        role,
        interval,
        pursuit,
        battery,
        tuple(incidents),
        beacon,
        ts_format,
    )


def _incident(node: _Node) -> IncidentDecl:
    kind_text = node.choice("type", [k.value for k in IncidentKind])
    kind = IncidentKind(kind_text)
    if kind in INSTANT_INCIDENTS:
        start = node.time("at")
        end = None
        if start is None:
            raise node.fail(f"a {kind} needs `at`", "at")
    else:
        start = node.time("from")
        end = node.time("to")
        if start is None:
            raise node.fail(f"a {kind} needs `from` (and `to`, else it lasts to the end)", "from")
    fallback_text = node.choice("fallback", ["wifi", "cell", "none"], None)
    if fallback_text is None:
        fallback = {IncidentKind.JAMMING: Fallback.CELL}.get(kind)
    else:
        fallback = None if fallback_text == "none" else Fallback(fallback_text)
    decl = IncidentDecl(
        kind=kind,
        where=node.where,
        start=start,
        end=end,
        acc_m=node.number("acc_m", None, 1.0),
        jump_probability=node.number("jump_probability", None, 0.0),
        interval_s=node.duration("interval"),
        fallback=fallback,
        daily=node.flag("daily", False),
    )
    if decl.jump_probability is not None and decl.jump_probability > 1.0:
        raise node.fail("is a probability per fix, 0–1", "jump_probability")
    if decl.daily and (start.clock is None or start.day is not None):
        raise node.fail("a daily incident needs clock times like '20:00'", "daily")
    node.close()
    return decl


def _zone_decl(
    node: _Node,
    subject_keys: set[str],
    region_ids: set[str],
    places: Mapping[str, Place],
    victims_with_phone: set[str],
) -> ZoneDecl:
    key = _key(node)
    kind = node.choice("kind", ZONE_KINDS)
    subject = node.text("subject", None)
    if subject is not None and subject not in subject_keys:
        raise node.fail(f"unknown subject {subject!r}", "subject")
    region = node.text("region", None)
    if region is not None and region not in region_ids:
        raise node.fail(f"unknown region {region!r}", "region")
    radius = node.number("radius_m", None, 1.0)
    buffer = node.number("buffer_m", 0.0, 0.0)
    victim = node.text("victim", None)
    geometry: dict[str, Any] | None = None
    forms = [k for k in ("geometry", "polygon", "point", "around") if k in node.raw]
    if kind == "victim":
        if victim is None:
            raise node.fail("a victim zone names the `victim` subject whose phone it follows")
        if victim not in victims_with_phone:
            raise node.fail(f"subject {victim!r} has no victim_phone device", "victim")
        if forms:
            raise node.fail("a victim zone has no fixed geometry; it follows the victim's phone")
        radius = radius or VICTIM_RADIUS_M
    else:
        if victim is not None:
            raise node.fail("only victim zones have a `victim`", "victim")
        if len(forms) != 1:
            raise node.fail("give exactly one of `geometry`, `polygon`, `point`, `around`")
        geometry = _geometry(node, forms[0], radius, places)
        if geometry["type"] == "Point" and radius is None:
            raise node.fail("a point zone needs `radius_m`", "radius_m")
        if geometry["type"] != "Point" and radius is not None:
            raise node.fail("`radius_m` is for point zones only", "radius_m")
    schedule = _schedule(node)
    if schedule is None and kind == "curfew":
        schedule = CURFEW_DEFAULT
    name = node.text("name", key)
    node.close()
    return ZoneDecl(key, name, kind, subject, victim, region, geometry, radius, buffer, schedule)


def _geometry(
    node: _Node, form: str, radius: float | None, places: Mapping[str, Place]
) -> dict[str, Any]:
    if form == "geometry":
        raw = node.get("geometry", kinds=(dict,))
        try:
            shaped = shape(raw)
        except Exception as exc:
            raise node.fail(f"not GeoJSON: {exc}", "geometry") from exc
        if shaped.geom_type not in ("Polygon", "MultiPolygon", "Point"):
            raise node.fail("must be a Polygon, MultiPolygon or Point", "geometry")
        if not shaped.is_valid:
            raise node.fail("is not a valid polygon (self-intersecting?)", "geometry")
        return dict(raw)
    if form == "polygon":
        ring = [list(_lonlat(p, node.at("polygon"))) for p in node.get("polygon", kinds=(list,))]
        if ring and ring[0] != ring[-1]:
            ring.append(ring[0])
        geometry = {"type": "Polygon", "coordinates": [ring]}
        if len(ring) < 4 or not shape(geometry).is_valid:
            raise node.fail("needs at least 3 corners and no self-intersection", "polygon")
        return geometry
    if form == "point":
        lon, lat = node.point("point")
        return {"type": "Point", "coordinates": [lon, lat]}
    around = node.text("around")
    if around not in places:
        raise node.fail(f"unknown place {around!r}", "around")
    centre = places[around].point
    box = node.get("box_m", None, (list,))
    if box is None:
        if radius is None:
            raise node.fail("`around` a place needs `radius_m` (a circle) or `box_m`", "around")
        return {"type": "Point", "coordinates": list(centre)}
    if len(box) != 2 or not all(isinstance(v, int | float) and v > 0 for v in box):
        raise node.fail("expected [width_m, height_m]", "box_m")
    ring = [list(p) for p in box_ring(centre, float(box[0]), float(box[1]))]
    return {"type": "Polygon", "coordinates": [ring]}


def _schedule(node: _Node) -> Schedule | None:
    windows = []
    for w in node.tables("windows"):
        days_raw = w.get("days", "daily", (str, list))
        if isinstance(days_raw, str):
            if days_raw not in DAY_SETS:
                raise w.fail(f"use a list of {', '.join(DAYS)} or one of {', '.join(DAY_SETS)}")
            days = DAY_SETS[days_raw]
        else:
            bad = [d for d in days_raw if d not in DAYS]
            if bad:
                raise w.fail(f"unknown days {bad}; use {', '.join(DAYS)}", "days")
            days = tuple(days_raw)
        windows.append(
            Window(
                tuple(days),
                _clock_of_day(w.get("start"), w.at("start")),
                _clock_of_day(w.get("end"), w.at("end")),
            )
        )
        w.close()
    exceptions = []
    for e in node.tables("exceptions"):
        day_raw = e.get("date", kinds=(str, date))
        try:
            day = day_raw if isinstance(day_raw, date) else date.fromisoformat(day_raw)
        except ValueError as exc:
            raise e.fail("expected a date like 2026-12-25", "date") from exc
        active = e.flag("active", False)
        start = e.get("start", None)
        end = e.get("end", None)
        if active and (start is None or end is None):
            raise e.fail("an active exception gives the day's window `start` and `end`")
        exceptions.append(
            DatedException(
                day,
                active,
                None if start is None else _clock_of_day(start, e.at("start")),
                None if end is None else _clock_of_day(end, e.at("end")),
            )
        )
        e.close()
    if not windows and not exceptions:
        return None
    return Schedule(tuple(windows), tuple(exceptions))


def _alert_type(value: Any, node: _Node, key: str) -> str:
    if value not in ALERT_TYPES:
        close = difflib.get_close_matches(str(value), sorted(ALERT_TYPES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise node.fail(f"{value!r} is not an alert type of DESIGN.md{hint}", key)
    return str(value)


def _expect(node: _Node, subject_keys: set[str]) -> ExpectDecl:
    alert = _alert_type(node.text("alert"), node, "alert")
    subject = node.text("subject")
    if subject not in subject_keys:
        raise node.fail(f"unknown subject {subject!r}", "subject")
    decl = ExpectDecl(
        alert,
        subject,
        node.time("after"),
        node.time("before"),
        node.flag("late", None),
        node.duration("within"),
        node.text("why", ""),
    )
    node.close()
    return decl


def _rule(node: _Node, subject_keys: set[str]) -> RuleDecl:
    alerts_raw = node.get("alerts", kinds=(list, str))
    if alerts_raw in ("*", ["*"]):
        alerts = None
    else:
        items = [alerts_raw] if isinstance(alerts_raw, str) else alerts_raw
        alerts = frozenset(_alert_type(a, node, "alerts") for a in items)
    subject = node.text("subject", None)
    if subject is not None and subject not in subject_keys:
        raise node.fail(f"unknown subject {subject!r}", "subject")
    decl = RuleDecl(alerts, subject, node.time("after"), node.time("before"), node.text("why", ""))
    node.close()
    return decl
