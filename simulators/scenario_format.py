"""The scenario format: what a scenario file may say, read into a declared `Scenario`.

The shape of a file is declared once, as msgspec Structs (`Scenario` and the entries under
it), and those Structs are also what the plan and the timeline read. Unknown keys are refused
(`forbid_unknown_fields`), types and ranges are msgspec's (`Meta`), and a duration, a moment
or an enum is decoded by `_hook`. `msgspec.convert` reads the parsed
TOML into them in one pass and reports the first problem with its path; `_explain` turns that
into a `ScenarioError` naming the file, the entry (`devices[2].battery.start`) and what was
expected, with a "did you mean" for a misspelt key. msgspec rather than pydantic: it is already
what the wire formats use, its errors carry a path in the file's own terms, and nothing here
needs more than Structs, `Meta` and a decode hook.

What msgspec cannot see is checked after the decode by small explicit functions, each naming
the entry: cross-references (a place, subject, region or victim named elsewhere must exist),
unique keys, and the rules that tie keys of one entry together (exactly one geometry, `leave`
or `arrive`). Window checks that need the resolved clock (an expectation both expected and
forbidden) are in `scenario_plan.check_rules`; itinerary timing errors show when
`scenario_timeline.build_timeline` lays out the trip. docs/simulators.md is the reference.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import msgspec.inspect
from msgspec import Meta
from shapely.geometry import shape

from tagwatch.alerts.vocabulary import ALERT_TYPES  # the contract's alert types, one list
from tagwatch.simulators.devices import (
    INSTANT_INCIDENTS,
    TAG_ONLY_INCIDENTS,
    Battery,
    DeviceKind,
    IncidentKind,
)
from tagwatch.simulators.geo import box_ring
from tagwatch.simulators.movement import Mode, Place
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
STOP_KINDS = ("at", "go", "stay")
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


class TimeSpec:
    """A moment as written: "+2h30m" (after the start), "22:00" or "day 2 07:00" (local clock,
    scenario zone), or an RFC 3339 time with offset. (A plain class, not a dataclass, so that
    msgspec hands the written value to `_hook` instead of expecting a table.)"""

    __slots__ = ("absolute", "clock", "day", "offset_s", "text")

    def __init__(
        self,
        text: str,
        offset_s: float | None = None,
        day: int | None = None,
        clock: time | None = None,
        absolute: datetime | None = None,
    ) -> None:
        self.text, self.offset_s, self.day, self.clock, self.absolute = (
            text,
            offset_s,
            day,
            clock,
            absolute,
        )

    def _fields(self) -> tuple[Any, ...]:
        return (self.text, self.offset_s, self.day, self.clock, self.absolute)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeSpec) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        names = ("text", "offset_s", "day", "clock", "absolute")
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"TimeSpec({inner})"

    def time_of_day(self) -> time:
        """The clock time of a checked "22:00" (all a schedule or a routine accepts)."""
        assert self.clock is not None
        return self.clock


class Seconds(float):
    """A duration as written ("90s", "15m", "2h30m", "1d" or a number), in seconds."""


def parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = DURATION.match(value.strip()) if isinstance(value, str) else None
    if match and any(match.groups()):
        days, hours, minutes, seconds = match.groups()
        return (
            int(days or 0) * 86400
            + int(hours or 0) * 3600
            + int(minutes or 0) * 60
            + float(seconds or 0)
        )
    raise ScenarioError(f"{value!r} is not a duration like '90s', '15m', '2h30m', '1d'")


def parse_time(value: Any) -> TimeSpec:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ScenarioError(f"{value} has no UTC offset; add one, e.g. +02:00")
        return TimeSpec(value.isoformat(), absolute=value)
    if isinstance(value, time):
        return TimeSpec(value.isoformat(), clock=value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            return TimeSpec(text, offset_s=parse_duration(text[1:]))
        match = CLOCK.match(text)
        if match:
            day, hour, minute, second = match.groups()
            if int(hour) > 23 or int(minute) > 59:
                raise ScenarioError(f"{text!r} is not a clock time")
            clock = time(int(hour), int(minute), int(second or 0))
            return TimeSpec(text, day=int(day) if day else None, clock=clock)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                raise ScenarioError(f"{text!r} has no UTC offset; add one, e.g. +02:00")
            return TimeSpec(text, absolute=parsed)
    raise ScenarioError(
        f"{value!r} is not a time: use '+2h' (after the start), '22:00', 'day 2 07:00' "
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


# -- the declared scenario: msgspec Structs, read from the file as written ------------------
#
# One set of types: `read_scenario` checks these and `scenario_plan` and `scenario_timeline`
# read them. A field holds what the file says (None where it says nothing); a default that
# depends on other keys (a device's role by its kind, a victim zone's radius, a curfew's
# windows) is a property beside the field, derived where it is read rather than copied into
# a second set of classes that would have to be kept in step with these.


class _Entry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A table of the file: unknown keys are errors, so a typo never silently changes it."""


Key = Annotated[str, Meta(pattern=KEY_PATTERN.pattern)]
AtLeast0 = Annotated[float, Meta(ge=0)]
AtLeast1 = Annotated[float, Meta(ge=1)]
Lon = Annotated[float, Meta(ge=-180, le=180)]
Lat = Annotated[float, Meta(ge=-90, le=90)]
Point = tuple[Lon, Lat]
PlaceSky = Literal["indoor", "urban", "open"]


class RegionDecl(_Entry, frozen=True):
    id: Annotated[str, Meta(pattern=REGION_PATTERN.pattern)]
    name: str = ""


class RegionChangeDecl(_Entry, frozen=True):
    at: TimeSpec
    region: str


class _PlaceEntry(_Entry, frozen=True):
    lon: Lon
    lat: Lat
    sky: PlaceSky = "indoor"
    indoor_acc_m: AtLeast1 | None = None


class _PlacePoint(_Entry, array_like=True, frozen=True):  # name = [lon, lat]
    lon: Lon
    lat: Lat


class AtDecl(_Entry, frozen=True):
    """`at` a place, `until` a moment or `for` a while (else until the next stop's time)."""

    at: str
    until: TimeSpec | None = None
    for_: Seconds | None = msgspec.field(default=None, name="for")
    sky: PlaceSky | None = None
    indoor_acc_m: AtLeast1 | None = None


class StayDecl(_Entry, frozen=True):
    """`stay` where one is, for a while."""

    stay: Seconds
    sky: PlaceSky | None = None
    indoor_acc_m: AtLeast1 | None = None


class GoDecl(_Entry, frozen=True):
    """`go` to a place or a [lon, lat] point, `by` a mode, leaving or arriving at a moment."""

    go: str | Point
    by: Mode = Mode.FOOT
    leave: TimeSpec | None = None
    arrive: TimeSpec | None = None
    via: tuple[Point, ...] = ()
    sky: PlaceSky | None = None
    speed_mps: Annotated[float, Meta(ge=0.1)] | None = None
    direct: bool = False


StopDecl = AtDecl | StayDecl | GoDecl
_STOPS: dict[str, type[StopDecl]] = {"at": AtDecl, "go": GoDecl, "stay": StayDecl}


class RoutineDecl(_Entry, frozen=True):
    home: str
    work: str | None = None
    shops: tuple[str, ...] = ()
    leave: TimeSpec = TimeSpec("07:30", clock=time(7, 30))
    work_until: TimeSpec = TimeSpec("17:00", clock=time(17, 0))
    home_by: TimeSpec = TimeSpec("18:30", clock=time(18, 30))
    shop_chance: AtLeast0 = 0.5


class SubjectDecl(_Entry, frozen=True):
    key: Key
    region: str
    timezone: str
    name: str | None = None
    # Each stop's keys depend on its kind, so the file's tables are decoded one by one (the
    # error names the stop); `read_scenario` puts the `StopDecl`s in their place.
    itinerary: tuple[Any, ...] = ()
    routine: RoutineDecl | None = None
    region_changes: tuple[RegionChangeDecl, ...] = ()

    @property
    def display_name(self) -> str:
        return self.key if self.name is None else self.name


class BatteryDecl(_Entry, frozen=True):
    start: Annotated[float, Meta(ge=0, le=100)] = Battery.start_pct
    drain_per_hour: AtLeast0 = Battery.drain_pct_per_h
    charge_per_hour: AtLeast0 = Battery.charge_pct_per_h
    low: AtLeast0 = Battery.low_pct
    critical: AtLeast0 = Battery.critical_pct


class IncidentDecl(_Entry, frozen=True):
    type: IncidentKind
    at: TimeSpec | None = None
    from_: TimeSpec | None = msgspec.field(default=None, name="from")
    to: TimeSpec | None = None
    acc_m: AtLeast1 | None = None
    jump_probability: Annotated[float, Meta(ge=0, le=1)] | None = None
    interval: Seconds | None = None
    fallback: Literal["wifi", "cell", "none"] | None = None
    daily: bool = False

    @property
    def start(self) -> TimeSpec:
        """`at` for an instant incident, else `from` (`read_scenario` checked which is given)."""
        start = self.at if self.from_ is None else self.from_
        assert start is not None
        return start

    @property
    def interval_s(self) -> float | None:
        return None if self.interval is None else float(self.interval)

    @property
    def link_fallback(self) -> Fallback | None:
        """Where a position comes from when GNSS is jammed: a cell fix unless the file says."""
        if self.fallback is None:
            return {IncidentKind.JAMMING: Fallback.CELL}.get(self.type)
        return None if self.fallback == "none" else Fallback(self.fallback)


class DeviceDecl(_Entry, frozen=True):
    key: Key
    kind: DeviceKind
    subject: str
    role: Literal["offender", "victim"] | None = None
    interval: Seconds | None = None
    pursuit_interval: Seconds | None = None
    battery: BatteryDecl | None = None
    incidents: tuple[IncidentDecl, ...] = ()
    home_beacon: str | None = None
    ts_format: Literal["epoch", "rfc3339"] = "epoch"
    # The assignment's range (device_assignments): by default from an hour before the start,
    # open-ended. `assigned_until` ends it mid-scenario (the tag is taken off at the end of the
    # order, or swapped for another); `assigned_from` starts a replacement device late. The
    # device still publishes whatever its incidents say: a rule must not judge it outside.
    assigned_from: TimeSpec | None = None
    assigned_until: TimeSpec | None = None
    # A phone whose app leaves `acc` out of its location messages (some OwnTracks/Traccar
    # builds do): the platform cannot weigh such a position, so it is no zone evidence.
    sends_acc: bool = True

    @property
    def assigned_role(self) -> str:
        """A victim's phone is the victim's; every other device is worn by the offender."""
        if self.role is not None:
            return self.role
        return "victim" if self.kind is DeviceKind.VICTIM_PHONE else "offender"

    @property
    def interval_s(self) -> float:
        return float(self.interval or 60.0)

    @property
    def pursuit_interval_s(self) -> float:
        return float(self.pursuit_interval or 15.0)

    @property
    def battery_model(self) -> Battery:
        """The battery as written, else the kind's usual one: a phone starts at 80 %, drains
        slower than a tag and charges slower."""
        if (b := self.battery) is not None:
            return Battery(b.start, b.drain_per_hour, b.charge_per_hour, b.low, b.critical)
        return Battery() if self.kind is DeviceKind.TAG else Battery(80.0, 1.5, 40.0)


class WindowDecl(_Entry, frozen=True):
    start: TimeSpec
    end: TimeSpec
    days: str | tuple[str, ...] = "daily"


class ExceptionDecl(_Entry, frozen=True):
    date: date
    active: bool = False
    start: TimeSpec | None = None
    end: TimeSpec | None = None


class ZoneDecl(_Entry, frozen=True):
    key: Key
    kind: Literal["exclusion", "inclusion", "curfew", "victim"]
    name: str | None = None
    subject: str | None = None
    victim: str | None = None
    region: str | None = None
    geometry: dict[str, Any] | None = None
    polygon: tuple[Point, ...] | None = None
    point: Point | None = None
    around: str | None = None
    box_m: tuple[Annotated[float, Meta(gt=0)], Annotated[float, Meta(gt=0)]] | None = None
    radius_m: AtLeast1 | None = None
    buffer_m: AtLeast0 = 0.0
    windows: tuple[WindowDecl, ...] = ()
    exceptions: tuple[ExceptionDecl, ...] = ()

    @property
    def radius(self) -> float | None:
        """A victim zone is a circle around the phone, Spain's distance unless given."""
        return (self.radius_m or VICTIM_RADIUS_M) if self.kind == "victim" else self.radius_m

    def geojson(self, places: Mapping[str, Place]) -> dict[str, Any] | None:
        """The zone as GeoJSON (lon-lat; a Point is a circle of `radius_m`), whichever form the
        file used; None for a victim zone, which moves with the phone."""
        if self.geometry is not None:
            return dict(self.geometry)
        if self.polygon is not None:
            ring = [list(p) for p in self.polygon]
            if ring and ring[0] != ring[-1]:
                ring.append(ring[0])
            return {"type": "Polygon", "coordinates": [ring]}
        if self.point is not None:
            return {"type": "Point", "coordinates": list(self.point)}
        if self.around is None:
            return None
        centre = places[self.around].point
        if self.box_m is None:
            return {"type": "Point", "coordinates": list(centre)}
        ring = [list(p) for p in box_ring(centre, self.box_m[0], self.box_m[1])]
        return {"type": "Polygon", "coordinates": [ring]}

    @property
    def schedule(self) -> Schedule | None:
        """The windows and dated exceptions (days and clock times checked by `read_scenario`);
        a curfew that gives none has the default curfew."""
        if not self.windows and not self.exceptions:
            return CURFEW_DEFAULT if self.kind == "curfew" else None
        windows = tuple(
            Window(
                DAY_SETS[w.days] if isinstance(w.days, str) else w.days,
                w.start.time_of_day(),
                w.end.time_of_day(),
            )
            for w in self.windows
        )
        exceptions = tuple(
            DatedException(
                e.date,
                e.active,
                None if e.start is None else e.start.time_of_day(),
                None if e.end is None else e.end.time_of_day(),
            )
            for e in self.exceptions
        )
        return Schedule(windows, exceptions)


class ExpectDecl(_Entry, frozen=True):
    alert: str
    subject: str
    after: TimeSpec | None = None
    before: TimeSpec | None = None
    late: bool | None = None
    within: Seconds | None = None
    why: str = ""

    @property
    def within_s(self) -> float | None:
        return None if self.within is None else float(self.within)


class RuleDecl(_Entry, frozen=True):
    alerts: str | tuple[str, ...]
    subject: str | None = None
    after: TimeSpec | None = None
    before: TimeSpec | None = None
    why: str = ""

    @property
    def alert_types(self) -> frozenset[str] | None:
        """The alerts the rule covers; None for "*" (any alert)."""
        if self.alerts in ("*", ("*",)):
            return None
        return frozenset((self.alerts,) if isinstance(self.alerts, str) else self.alerts)


class Scenario(_Entry, frozen=True):
    name: Annotated[str, Meta(pattern=NAME_PATTERN.pattern)]
    seed: int
    start: TimeSpec
    duration: Seconds
    timezone: str
    title: str | None = None
    description: str = ""
    regions: tuple[RegionDecl, ...] = ()
    # Decoded one by one, so that an error names the place; `read_scenario` puts the `Place`s
    # in their place.
    places: dict[str, Any] = {}
    subjects: tuple[SubjectDecl, ...] = ()
    devices: tuple[DeviceDecl, ...] = ()
    zones: tuple[ZoneDecl, ...] = ()
    expect: tuple[ExpectDecl, ...] = ()
    forbid: tuple[RuleDecl, ...] = ()
    allow: tuple[RuleDecl, ...] = ()
    # Not a key of the file (`read_scenario` refuses it there): the file's name, for messages.
    source: str = "<memory>"

    @property
    def duration_s(self) -> float:
        return float(self.duration)

    def clock(self, on_date: date | None = None) -> Clock:
        assert self.start.absolute is not None  # `read_scenario` checked
        tz = ZoneInfo(self.timezone)
        local = self.start.absolute.astimezone(tz)
        if on_date is None:
            return Clock(local, tz)
        moved = datetime.combine(on_date, local.time(), tzinfo=tz)
        return Clock(moved, tz, (on_date - local.date()).days)


def _hook(kind: type, value: Any) -> Any:
    if kind is TimeSpec:
        return parse_time(value)
    if kind is Seconds:
        return Seconds(parse_duration(value))
    raise NotImplementedError(kind)


# -- decoding and its messages --------------------------------------------------------------

_PATTERN_HELP = {
    NAME_PATTERN.pattern: "lower-case letters, digits and '-', at most 32 long",
    KEY_PATTERN.pattern: "letters, digits, '_' and '-', at most 16 long",
    REGION_PATTERN.pattern: "a region id, [A-Za-z0-9_.-]{1,64}",
}


T = TypeVar("T")


def _decode(raw: Any, kind: type[T], source: str, prefix: str = "") -> T:
    """`raw` read into `kind`, or a `ScenarioError` naming the file and the entry."""
    try:
        return msgspec.convert(raw, kind, dec_hook=_hook)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        at = at.rstrip("`")  # "" for the top level, else ".devices[2].battery"
        node = _type_at(msgspec.inspect.type_info(kind), at)
        raise _explain(message, node, source, prefix + at) from None


def _explain(message: str, node: Any, source: str, path: str) -> ScenarioError:
    """msgspec's message in the scenario's terms: the entry's path, and a hint where one helps."""
    if unknown := re.match(r"Object contains unknown field `(.+)`", message):
        key = unknown[1]
        known = [f.encode_name for f in getattr(node, "fields", ())]
        close = difflib.get_close_matches(key, known, n=1)
        return _fail(source, f"{path}.{key}", "unknown key" + _did_you_mean(close))
    if missing := re.match(r"Object missing required field `(.+)`", message):
        return _fail(source, f"{path}.{missing[1]}", "is required")
    if pattern := re.match(r"Expected `str` matching regex '(.+)'", message):
        return _fail(source, path, f"expected {_PATTERN_HELP.get(pattern[1], pattern[1])}")
    if message == "Invalid RFC3339 encoded date":
        message = "expected a date like 2026-12-25"
    elif re.match(r"Invalid enum value", message):
        values = _choices(node)
        message = f"{message.split(' ', 3)[-1]} is not one of {', '.join(values)}"
    else:
        message = re.sub(r"^Expected `\w+` ([<>]=?)", r"expected \1", message)
        message = message[0].lower() + message[1:].replace("`", "")
    return _fail(source, path, message)


def _type_at(node: Any, path: str) -> Any:
    """The msgspec type at `path` (".devices[2].battery"), to list its keys or choices."""
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", path):
        node = _unwrap(node, name)
        if name:
            fields = getattr(node, "fields", ())
            node = next((f.type for f in fields if f.encode_name == name), None)
        elif isinstance(node, msgspec.inspect.TupleType):
            node = node.item_types[int(index)]
        else:
            node = getattr(node, "item_type", getattr(node, "value_type", None))
    return _unwrap(node, "")


def _unwrap(node: Any, name: str) -> Any:
    while isinstance(node, msgspec.inspect.Metadata | msgspec.inspect.UnionType):
        if isinstance(node, msgspec.inspect.Metadata):
            node = node.type
            continue
        arms = [t for t in node.types if not isinstance(t, msgspec.inspect.NoneType)]
        wanted = msgspec.inspect.StructType if name else msgspec.inspect.CollectionType
        node = next((t for t in arms if isinstance(t, wanted)), arms[0])
    return node


def _choices(node: Any) -> list[str]:
    if isinstance(node, msgspec.inspect.EnumType):
        return [str(member.value) for member in node.cls]
    return [str(v) for v in getattr(node, "values", ())]


def _did_you_mean(close: list[str]) -> str:
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fail(source: str, where: str, message: str) -> ScenarioError:
    return ScenarioError(f"{source}: {where.lstrip('.') or 'top level'}: {message}")


# -- the checks a Struct cannot express ------------------------------------------------------


class _Checker:
    """Cross-references and rules that tie keys together, each failure naming the entry."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.places: dict[str, Place] = {}
        self.regions: set[str] = set()
        self.subjects: set[str] = set()

    def fail(self, where: str, message: str) -> ScenarioError:
        return _fail(self.source, where, message)

    def ref(self, value: str, known: Mapping[str, Any] | set[str], what: str, where: str) -> str:
        if value not in known:
            listed = f" ({what}s: {', '.join(sorted(known)) or 'none'})" if what == "place" else ""
            raise self.fail(where, f"unknown {what} {value!r}{listed}")
        return value

    def unique(self, keys: list[str], what: str) -> set[str]:
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise self.fail(what, f"duplicate key {key!r}")
            seen.add(key)
        return seen

    def timezone(self, name: str, where: str) -> None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise self.fail(where, f"unknown IANA time zone {name!r}") from exc

    def clock_of_day(self, spec: TimeSpec | None, where: str) -> None:
        if spec is not None and (spec.clock is None or spec.day is not None):
            raise self.fail(where, "expected a clock time like '07:30'")

    def alert(self, value: str, where: str) -> None:
        if value not in ALERT_TYPES:
            close = difflib.get_close_matches(value, sorted(ALERT_TYPES), n=1)
            message = f"{value!r} is not an alert type of DESIGN.md{_did_you_mean(close)}"
            raise self.fail(where, message)

    def place(self, name: str, entry: Any) -> Place:
        where = f"places.{name}"
        if isinstance(entry, list):
            point = _decode(entry, _PlacePoint, self.source, where)
            return Place(name, point.lon, point.lat)
        p = _decode(entry, _PlaceEntry, self.source, where)
        return Place(name, p.lon, p.lat, Sky(p.sky), p.indoor_acc_m)

    def subject(self, s: SubjectDecl, where: str) -> SubjectDecl:
        self.ref(s.region, self.regions, "region", f"{where}.region")
        stops = tuple(
            self.stop(raw, f"{where}.itinerary[{i}]") for i, raw in enumerate(s.itinerary)
        )
        if s.routine is not None:
            self.routine(s.routine, f"{where}.routine")
        if s.routine is None and not stops:
            raise self.fail(f"{where}.itinerary", "needs an `itinerary` or a `routine`")
        if s.routine is not None and stops:
            raise self.fail(f"{where}.routine", "give an `itinerary` or a `routine`, not both")
        if stops and not isinstance(stops[0], AtDecl):
            message = "the first stop must be `at` a place (where the day starts)"
            raise self.fail(f"{where}.itinerary", message)
        for i, change in enumerate(s.region_changes):
            self.ref(change.region, self.regions, "region", f"{where}.region_changes[{i}].region")
        self.timezone(s.timezone, f"{where}.timezone")
        return msgspec.structs.replace(s, itinerary=stops)

    def routine(self, r: RoutineDecl, where: str) -> None:
        for key, name in (("home", r.home), ("work", r.work), *(("shops", s) for s in r.shops)):
            if name is not None:
                self.ref(name, self.places, "place", f"{where}.{key}")
        for key in ("leave", "work_until", "home_by"):
            self.clock_of_day(getattr(r, key), f"{where}.{key}")

    def stop(self, raw: dict[str, Any], where: str) -> StopDecl:
        kinds = [k for k in STOP_KINDS if k in raw]
        if len(kinds) != 1:
            raise self.fail(where, "each stop has exactly one of `at`, `go`, `stay`")
        stop = _decode(raw, _STOPS[kinds[0]], self.source, where)
        if isinstance(stop, AtDecl):
            if stop.until is not None and stop.for_ is not None:
                raise self.fail(where, "give `until` or `for`, not both")
            self.ref(stop.at, self.places, "place", f"{where}.at")
        elif isinstance(stop, GoDecl):
            if stop.leave is not None and stop.arrive is not None:
                raise self.fail(where, "give `leave` or `arrive`, not both")
            if isinstance(stop.go, str):
                self.ref(stop.go, self.places, "place", f"{where}.go")
        return stop

    def device(self, d: DeviceDecl, where: str) -> None:
        self.ref(d.subject, self.subjects, "subject", f"{where}.subject")
        tag = d.kind is DeviceKind.TAG
        for i, incident in enumerate(d.incidents):
            self.incident(incident, f"{where}.incidents[{i}]", tag)
        if d.home_beacon is not None:
            self.ref(d.home_beacon, self.places, "place", f"{where}.home_beacon")
            if not tag:
                raise self.fail(f"{where}.home_beacon", "only tags have a home beacon")
        if tag and not d.sends_acc:
            raise self.fail(f"{where}.sends_acc", "the tag contract requires `acc`; phones only")

    def incident(self, i: IncidentDecl, where: str, tag: bool) -> None:
        if i.type in TAG_ONLY_INCIDENTS and not tag:
            raise self.fail(where, f"{i.type} happens to tags only")
        if i.type in INSTANT_INCIDENTS:
            if i.at is None or i.from_ is not None or i.to is not None:
                raise self.fail(f"{where}.at", f"a {i.type} happens `at` a moment (no `from`/`to`)")
        elif i.from_ is None or i.at is not None:
            message = f"a {i.type} needs `from` (and `to`, else it lasts to the end), not `at`"
            raise self.fail(f"{where}.from", message)
        if i.daily and (i.start.clock is None or i.start.day is not None):
            raise self.fail(f"{where}.daily", "a daily incident needs clock times like '20:00'")

    def zone(self, z: ZoneDecl, where: str, victims_with_phone: set[str]) -> None:
        if z.subject is not None:
            self.ref(z.subject, self.subjects, "subject", f"{where}.subject")
        if z.region is not None:
            self.ref(z.region, self.regions, "region", f"{where}.region")
        forms = [f for f in ("geometry", "polygon", "point", "around") if getattr(z, f) is not None]
        if z.kind == "victim":
            if z.victim is None:
                raise self.fail(
                    where, "a victim zone names the `victim` subject whose phone it follows"
                )
            if z.victim not in victims_with_phone:
                raise self.fail(
                    f"{where}.victim", f"subject {z.victim!r} has no victim_phone device"
                )
            if forms or z.box_m is not None:
                raise self.fail(
                    where, "a victim zone has no fixed geometry; it follows the victim's phone"
                )
        else:
            if z.victim is not None:
                raise self.fail(f"{where}.victim", "only victim zones have a `victim`")
            if len(forms) != 1:
                raise self.fail(
                    where, "give exactly one of `geometry`, `polygon`, `point`, `around`"
                )
            geometry_type = self.geometry(z, where)
            if geometry_type == "Point" and z.radius_m is None:
                raise self.fail(f"{where}.radius_m", "a point zone needs `radius_m`")
            if geometry_type != "Point" and z.radius_m is not None:
                raise self.fail(f"{where}.radius_m", "`radius_m` is for point zones only")
        self.schedule(z, where)

    def geometry(self, z: ZoneDecl, where: str) -> str:
        """The GeoJSON type of the zone's one form, once that form is checked."""
        if z.box_m is not None and z.around is None:
            raise self.fail(f"{where}.box_m", "`box_m` is for a zone `around` a place")
        if z.around is not None:
            self.ref(z.around, self.places, "place", f"{where}.around")
            if z.box_m is None and z.radius_m is None:
                message = "`around` a place needs `radius_m` (a circle) or `box_m`"
                raise self.fail(f"{where}.around", message)
        if z.geometry is not None:
            try:
                shaped = shape(z.geometry)
            except Exception as exc:
                raise self.fail(f"{where}.geometry", f"not GeoJSON: {exc}") from exc
            if shaped.geom_type not in ("Polygon", "MultiPolygon", "Point"):
                raise self.fail(f"{where}.geometry", "must be a Polygon, MultiPolygon or Point")
            if not shaped.is_valid:
                raise self.fail(f"{where}.geometry", "is not a valid polygon (self-intersecting?)")
        geometry = z.geojson(self.places)
        assert geometry is not None
        if z.polygon is not None and (
            len(geometry["coordinates"][0]) < 4 or not shape(geometry).is_valid
        ):
            message = "needs at least 3 corners and no self-intersection"
            raise self.fail(f"{where}.polygon", message)
        return str(geometry["type"])

    def schedule(self, z: ZoneDecl, where: str) -> None:
        for i, w in enumerate(z.windows):
            at = f"{where}.windows[{i}]"
            if isinstance(w.days, str):
                if w.days not in DAY_SETS:
                    raise self.fail(
                        f"{at}.days",
                        f"use a list of {', '.join(DAYS)} or one of {', '.join(DAY_SETS)}",
                    )
            elif bad := [d for d in w.days if d not in DAYS]:
                raise self.fail(f"{at}.days", f"unknown days {bad}; use {', '.join(DAYS)}")
            self.clock_of_day(w.start, f"{at}.start")
            self.clock_of_day(w.end, f"{at}.end")
        for i, e in enumerate(z.exceptions):
            at = f"{where}.exceptions[{i}]"
            if e.active and (e.start is None or e.end is None):
                raise self.fail(at, "an active exception gives the day's window `start` and `end`")
            self.clock_of_day(e.start, f"{at}.start")
            self.clock_of_day(e.end, f"{at}.end")

    def expect(self, e: ExpectDecl, where: str) -> None:
        self.alert(e.alert, f"{where}.alert")
        self.ref(e.subject, self.subjects, "subject", f"{where}.subject")

    def rule(self, r: RuleDecl, where: str) -> None:
        if r.alert_types is not None:
            for alert in (r.alerts,) if isinstance(r.alerts, str) else r.alerts:
                self.alert(alert, f"{where}.alerts")
        if r.subject is not None:
            self.ref(r.subject, self.subjects, "subject", f"{where}.subject")


def read_scenario(raw: Mapping[str, Any], source: str = "<memory>") -> Scenario:
    """The declared scenario, every entry checked; `scenario.parse_scenario` adds the window
    checks that need the plan (kept there so this module does not depend on the plan)."""
    if not isinstance(raw, Mapping):
        raise _fail(source, "", "expected a table")
    if "source" in raw:  # a field of `Scenario`, but not of the file
        raise _fail(source, "source", "unknown key")
    f = _decode(dict(raw), Scenario, source)
    check = _Checker(source)
    if f.start.absolute is None:
        raise check.fail("start", "must be an RFC 3339 time with offset")
    if f.duration <= 0:
        raise check.fail("duration", "is required and must be positive")
    check.timezone(f.timezone, "timezone")
    if not f.regions:
        raise check.fail("regions", "at least one [[regions]] entry is required")
    check.regions = check.unique([r.id for r in f.regions], "regions")
    check.places = {name: check.place(name, entry) for name, entry in f.places.items()}
    check.subjects = check.unique([s.key for s in f.subjects], "subjects")
    subjects = tuple(check.subject(s, f"subjects[{i}]") for i, s in enumerate(f.subjects))
    if not subjects:
        raise check.fail("subjects", "at least one [[subjects]] entry is required")
    for i, d in enumerate(f.devices):
        check.device(d, f"devices[{i}]")
    check.unique([d.key for d in f.devices], "devices")
    victims = {d.subject for d in f.devices if d.kind is DeviceKind.VICTIM_PHONE}
    for i, z in enumerate(f.zones):
        check.zone(z, f"zones[{i}]", victims)
    check.unique([z.key for z in f.zones], "zones")
    for i, e in enumerate(f.expect):
        check.expect(e, f"expect[{i}]")
    for what, rules in (("forbid", f.forbid), ("allow", f.allow)):
        for i, r in enumerate(rules):
            check.rule(r, f"{what}[{i}]")
    return msgspec.structs.replace(f, places=check.places, subjects=subjects, source=source)
