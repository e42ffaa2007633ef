"""When a zone is active: weekly windows and dated exceptions on the subject's own wall clock.

A court order reads "home from 19:00 to 07:00, except on 24 December until 23:00", in the
subject's local time, and it has to mean one thing on the nights the clocks change. The rule used
everywhere here:

    a boundary at wall time ``w`` happens at the first instant at which the subject's clock reads
    ``w`` or later.

So a boundary that falls in the spring-forward gap happens at the first instant after the gap
(01:30 in Europe/London on the last Sunday of March happens at 02:00 BST), and a boundary in the
repeated hour of the autumn happens at its first occurrence, never twice. A window 19:00-07:00 is
therefore 11 real hours on the spring night and 13 on the autumn night, and no window flickers
off and on during the repeated hour.

Vectorized by a "schedule clock": ``M(t) = max over s <= t of wall(s)`` in whole seconds. It equals
the wall clock except in the repeated hour, where it stands still at the last second before the
clocks went back; with it, "the clock has reached w" is simply ``M(t) >= w``, so a window
``[a, b)`` of wall time is active exactly when ``a <= M(t) < b``. Per time zone the clock is a short
piecewise table (two or three pieces a year) built from ``zoneinfo`` and cached; evaluating it for a
batch is one ``searchsorted``.

Exceptions override the weekly windows. Where exceptions overlap, the shortest one (by wall-clock
length) decides, so a two-hour court-approved outing inside a holiday that adds a whole day of
curfew wins over the holiday; an exact tie goes to the exception that makes the zone active.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from tagwatch.geofence._schedule_kernel import compiled_active

DAY = 86_400
WEEK = 7 * DAY
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# 1970-01-01 was a Thursday: shift so that Monday 00:00 is second 0 of the week.
_WEEK_SHIFT = 3 * DAY
_EXCEPTION_SPAN = 1 << 35  # wall seconds per exception table in the packed lookup keys

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class ScheduleError(ValueError):
    """A schedule that cannot mean one thing."""


def _require(item: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        msg = f"{what} needs {', '.join(missing)}"
        raise ScheduleError(msg)


def parse_clock(text: str, *, allow_24: bool = False) -> int:
    """ "HH:MM" or "HH:MM:SS" to seconds after midnight."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) == 2 for p in parts):
        msg = f"time of day {text!r} is not HH:MM or HH:MM:SS"
        raise ScheduleError(msg)
    hours, minutes = int(parts[0]), int(parts[1])
    seconds = int(parts[2]) if len(parts) == 3 else 0
    total = hours * 3600 + minutes * 60 + seconds
    if allow_24 and total == DAY:
        return DAY
    if hours > 23 or minutes > 59 or seconds > 59:
        msg = f"time of day {text!r} is out of range"
        raise ScheduleError(msg)
    return total


def parse_wall(text: str) -> int:
    """Local wall time "YYYY-MM-DDTHH:MM[:SS]" (no offset: it is read in the subject's zone) to
    seconds since 1970-01-01 00:00 on that wall clock."""
    day_text, sep, clock_text = text.partition("T")
    if not sep:
        day_text, sep, clock_text = text.partition(" ")
    try:
        day = date.fromisoformat(day_text)
    except ValueError as exc:
        msg = f"local time {text!r} is not YYYY-MM-DDTHH:MM"
        raise ScheduleError(msg) from exc
    if not sep:
        msg = f"local time {text!r} has no time of day"
        raise ScheduleError(msg)
    if any(c in clock_text for c in "+-Z"):
        msg = f"local time {text!r} must not carry an offset: it is the subject's wall clock"
        raise ScheduleError(msg)
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY + parse_clock(clock_text)


def format_wall(seconds: int) -> str:
    day = date.fromordinal(_EPOCH_ORDINAL + seconds // DAY)
    rest = seconds % DAY
    return f"{day.isoformat()}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def _parse_day(value: object) -> int:
    if isinstance(value, bool):
        msg = f"day {value!r} is not a weekday"
        raise ScheduleError(msg)
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    if isinstance(value, str) and value.lower()[:3] in DAY_NAMES:
        return DAY_NAMES.index(value.lower()[:3])
    msg = f"day {value!r} is not a weekday (mon..sun or 0..6, Monday = 0)"
    raise ScheduleError(msg)


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """Active from ``start`` to ``end`` on each of ``days`` (the days the window *starts*; Monday
    is 0). An ``end`` at or before ``start`` ends on the next day, so 19:00-07:00 is one night.
    ``end`` may be "24:00"."""

    start: str
    end: str
    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)

    def __post_init__(self) -> None:
        start = parse_clock(self.start)
        end = parse_clock(self.end, allow_24=True)
        if start == end % DAY and end != DAY:
            msg = (
                f"window {self.start}-{self.end} starts when it ends; "
                "write 00:00-24:00 for a whole day"
            )
            raise ScheduleError(msg)
        if not self.days:
            msg = "a weekly window needs at least one day"
            raise ScheduleError(msg)
        object.__setattr__(self, "days", tuple(sorted({_parse_day(d) for d in self.days})))

    def intervals(self) -> list[tuple[int, int]]:
        """Week-second intervals [a, b), split at the end of the week."""
        start = parse_clock(self.start)
        end = parse_clock(self.end, allow_24=True)
        if end <= start:
            end += DAY
        out: list[tuple[int, int]] = []
        for day in self.days:
            a = day * DAY + start
            b = day * DAY + end
            if b > WEEK:
                out.append((a, WEEK))
                out.append((0, b - WEEK))
            else:
                out.append((a, b))
        return out


@dataclass(frozen=True, slots=True)
class ScheduleException:
    """A dated change on the subject's wall clock: ``active=False`` removes time (a court-approved
    outing), ``active=True`` adds it (a holiday curfew). ``start``/``end`` are local wall times
    "YYYY-MM-DDTHH:MM"."""

    start: str
    end: str
    active: bool

    def __post_init__(self) -> None:
        if self.wall_end <= self.wall_start:
            msg = f"exception {self.start} .. {self.end} does not end after it starts"
            raise ScheduleError(msg)

    @property
    def wall_start(self) -> int:
        return parse_wall(self.start)

    @property
    def wall_end(self) -> int:
        return parse_wall(self.end)


def _merge(intervals: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple((a, b) for a, b in merged)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly windows plus dated exceptions; a zone with a schedule is inactive outside them."""

    weekly: tuple[WeeklyWindow, ...] = ()
    exceptions: tuple[ScheduleException, ...] = ()
    _compiled: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, ...], tuple[int, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "weekly", tuple(self.weekly))
        object.__setattr__(self, "exceptions", tuple(self.exceptions))
        if not self.weekly and not self.exceptions:
            msg = "a schedule needs at least one weekly window or exception"
            raise ScheduleError(msg)
        weekly = _merge(i for w in self.weekly for i in w.intervals())
        object.__setattr__(self, "_compiled", (weekly, _exception_timeline(self.exceptions)))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Schedule:
        """``{"weekly": [{"days": ["mon", ...], "start": "19:00", "end": "07:00"}],
        "exceptions": [{"start": "2026-12-24T19:00", "end": "2026-12-24T23:00", "active": false}]}``
        """
        if not isinstance(obj, Mapping):
            msg = "a schedule is a JSON object"
            raise ScheduleError(msg)
        unknown = set(obj) - {"weekly", "exceptions"}
        if unknown:
            msg = f"unknown schedule fields {sorted(unknown)}"
            raise ScheduleError(msg)
        weekly_items = obj.get("weekly", ())
        exception_items = obj.get("exceptions", ())
        for name, items in (("weekly", weekly_items), ("exceptions", exception_items)):
            if not isinstance(items, list | tuple) or not all(
                isinstance(item, Mapping) for item in items
            ):
                msg = f"schedule {name} must be a list of objects"
                raise ScheduleError(msg)
        weekly = []
        for item in weekly_items:
            _require(item, ("start", "end"), "a weekly window")
            days = item.get("days", DAY_NAMES)
            if not isinstance(days, list | tuple):
                msg = "a weekly window's days must be a list of day names"
                raise ScheduleError(msg)
            weekly.append(
                WeeklyWindow(
                    start=str(item["start"]),
                    end=str(item["end"]),
                    days=tuple(_parse_day(d) for d in days),
                )
            )
        exceptions = []
        for e in exception_items:
            _require(e, ("start", "end", "active"), "an exception")
            start, end, active = str(e["start"]), str(e["end"]), bool(e["active"])
            exceptions.append(ScheduleException(start=start, end=end, active=active))
        return cls(weekly=tuple(weekly), exceptions=tuple(exceptions))

    def to_json(self) -> dict[str, Any]:
        return {
            "weekly": [
                {"days": [DAY_NAMES[d] for d in w.days], "start": w.start, "end": w.end}
                for w in self.weekly
            ],
            "exceptions": [
                {"start": e.start, "end": e.end, "active": e.active} for e in self.exceptions
            ],
        }

    @property
    def weekly_intervals(self) -> tuple[tuple[int, int], ...]:
        """Merged [a, b) intervals in seconds after Monday 00:00."""
        return self._compiled[0]

    @property
    def exception_timeline(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Breakpoints in wall seconds and, for each piece that starts there, -1 (no exception),
        0 (forced inactive) or 1 (forced active)."""
        return self._compiled[1]

    def active(self, times: npt.ArrayLike, timezone: str) -> BoolArray:
        """Whether the schedule is active at each UTC epoch second, on ``timezone``'s clock."""
        instants = np.asarray(times, dtype=np.float64)
        clock = schedule_clock(instants.ravel(), timezone)
        book = ScheduleBook()
        book.assign(0, self)
        flat = book.active(np.zeros(clock.shape, dtype=np.int64), clock)
        return flat.reshape(instants.shape)


def _exception_timeline(
    exceptions: Sequence[ScheduleException],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not exceptions:
        return (), ()
    spans = [(e.wall_start, e.wall_end, e.active) for e in exceptions]
    cuts = sorted({p for a, b, _ in spans for p in (a, b)})
    breaks: list[int] = []
    values: list[int] = []
    for a, b in itertools.pairwise(cuts):
        covering = [
            (end - start, not on, on) for start, end, on in spans if start <= a and b <= end
        ]
        value = -1
        if covering:
            value = 1 if min(covering)[2] else 0
        if not values or values[-1] != value:
            breaks.append(a)
            values.append(value)
    breaks.append(cuts[-1])
    values.append(-1)
    return tuple(breaks), tuple(values)


# ------------------------------------------------------------------ the schedule clock


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown IANA time zone {name!r}"
        raise ScheduleError(msg) from exc
    return name


def _offset(zone: ZoneInfo, t: int) -> int:
    delta = datetime.fromtimestamp(t, zone).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


@functools.lru_cache(maxsize=2048)
def _clock_table(name: str, year: int) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """Pieces of the schedule clock for one zone over one UTC year (with two days either side):
    breakpoints (UTC seconds), offsets, frozen values, frozen flags."""
    zone = ZoneInfo(name)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) - 2 * DAY
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()) + 2 * DAY
    step = 3 * 3600
    breaks = [start]
    offsets = [_offset(zone, start)]
    frozen_values = [0]
    frozen = [False]
    known_t, known = start, offsets[0]
    t = start + step
    while t <= end:
        current = _offset(zone, t)
        if current == known:
            known_t = t
            t += step
            continue
        lo, hi = known_t, t  # offset(lo) == known != offset(hi): a change in (lo, hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(zone, mid) == known:
                lo = mid
            else:
                hi = mid
        after = _offset(zone, hi)
        breaks.append(hi)
        if after < known:
            # Clocks go back: the schedule clock stands still at the last second before.
            offsets.append(after)
            frozen_values.append(hi + known - 1)
            frozen.append(True)
            breaks.append(hi + known - after)
        offsets.append(after)
        frozen_values.append(0)
        frozen.append(False)
        known_t, known = hi, after  # t is checked again: there may be a second change
    return (
        np.asarray(breaks, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(frozen_values, dtype=np.int64),
        np.asarray(frozen, dtype=np.bool_),
    )


def _years(seconds: IntArray) -> IntArray:
    return np.asarray(
        seconds.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970,
        dtype=np.int64,
    )


def schedule_clock(times: npt.NDArray[np.float64], timezone: str) -> IntArray:
    """The schedule clock M(t) in whole wall seconds since 1970-01-01 00:00 local."""
    seconds = np.floor(times).astype(np.int64)
    out = np.empty(seconds.shape, dtype=np.int64)
    if seconds.size == 0:
        return out
    # Years grow with time: when the earliest and the latest fall in one year, so does every
    # fix, and the per-fix calendar arithmetic (2 % of classifying a batch) is skipped.
    first, last = (int(y) for y in _years(np.array([seconds.min(), seconds.max()])))
    years = _years(seconds) if first != last else None
    for year in range(first, last + 1):
        mask = years == year if years is not None else slice(None)
        part = seconds[mask]
        breaks, offsets, frozen_values, frozen = _clock_table(timezone, year)
        piece = np.searchsorted(breaks, part, side="right") - 1
        np.maximum(piece, 0, out=piece)
        out[mask] = np.where(frozen[piece], frozen_values[piece], part + offsets[piece])
    return out


def week_second(clock: IntArray) -> IntArray:
    return np.asarray((clock + _WEEK_SHIFT) % WEEK, dtype=np.int64)


# ------------------------------------------------------------------ many schedules at once

NO_SCHEDULE = -1
_NO_TABLES = np.zeros(0, dtype=np.int64)


class ScheduleBook:
    """The schedules of every zone slot of an index, evaluated for many (slot, clock) pairs in one
    pass. Identical weekly patterns are stored once (most curfews are the same 19:00-07:00), and the
    packed lookup tables are recompiled lazily after a change, in time proportional to the number of
    distinct patterns and exceptions, not to the number of zones."""

    def __init__(self) -> None:
        self._pattern_of_slot = np.full(16, NO_SCHEDULE, dtype=np.int64)
        self._exceptions_of_slot = np.full(16, -1, dtype=np.int64)
        self._patterns: dict[tuple[tuple[int, int], ...], int] = {}
        self._timelines: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._pattern_keys = np.zeros(0, dtype=np.int64)
        self._exception_keys = np.zeros(0, dtype=np.int64)
        self._exception_values = np.zeros(0, dtype=np.int8)
        self._exception_table_of_slot: IntArray = np.zeros(0, dtype=np.int64)
        self._dirty_patterns = False
        self._dirty_exceptions = False

    def _grow(self, slot: int) -> None:
        size = self._pattern_of_slot.size
        if slot < size:
            return
        new = max(slot + 1, 2 * size)
        for name in ("_pattern_of_slot", "_exceptions_of_slot"):
            old = getattr(self, name)
            grown = np.full(new, NO_SCHEDULE if name == "_pattern_of_slot" else -1, np.int64)
            grown[:size] = old
            setattr(self, name, grown)
        # The compiled slot -> exception table map must cover the new slots too.
        self._dirty_exceptions = True

    def assign(self, slot: int, schedule: Schedule | None) -> None:
        self._grow(slot)
        if self._exceptions_of_slot[slot] >= 0:
            self._timelines.pop(slot, None)
            self._exceptions_of_slot[slot] = -1
            self._dirty_exceptions = True
        if schedule is None:
            self._pattern_of_slot[slot] = NO_SCHEDULE
            return
        pattern = schedule.weekly_intervals
        pid = self._patterns.get(pattern)
        if pid is None:
            pid = len(self._patterns)
            self._patterns[pattern] = pid
            self._dirty_patterns = True
        self._pattern_of_slot[slot] = pid
        if schedule.exceptions:
            self._timelines[slot] = schedule.exception_timeline
            self._exceptions_of_slot[slot] = slot
            self._dirty_exceptions = True

    def clear(self, slot: int) -> None:
        self.assign(slot, None)

    def has_schedule(self, slots: IntArray) -> BoolArray:
        return np.asarray(self._pattern_of_slot[slots] != NO_SCHEDULE)

    def _compile(self) -> None:
        if self._dirty_patterns:
            keys: list[int] = []
            for pattern, pid in sorted(self._patterns.items(), key=lambda kv: kv[1]):
                for a, b in pattern:
                    keys.extend((pid * WEEK + a, pid * WEEK + b))
            self._pattern_keys = np.asarray(keys, dtype=np.int64)
            self._dirty_patterns = False
        if self._dirty_exceptions:
            table_of_slot = np.full(self._pattern_of_slot.size, -1, dtype=np.int64)
            keys = []
            values: list[int] = []
            for table, slot in enumerate(sorted(self._timelines)):
                table_of_slot[slot] = table
                base = table * _EXCEPTION_SPAN
                keys.append(base)
                values.append(-1)
                breaks, vals = self._timelines[slot]
                for b, v in zip(breaks, vals, strict=True):
                    keys.append(base + min(max(b, 1), _EXCEPTION_SPAN - 1))
                    values.append(v)
            self._exception_keys = np.asarray(keys, dtype=np.int64)
            self._exception_values = np.asarray(values, dtype=np.int8)
            self._exception_table_of_slot = table_of_slot
            self._dirty_exceptions = False

    def active_pairs(self, slots: IntArray, pair_fix: IntArray, clock: IntArray) -> BoolArray:
        """``active(slots, clock[pair_fix])``, in one compiled pass over the pairs when Numba is
        installed (geofence._schedule_kernel; the same answers)."""
        kernel = compiled_active()
        if kernel is None:
            return self.active(slots, clock[pair_fix])
        self._compile()
        out = np.empty(slots.shape, dtype=np.bool_)
        table = self._exception_table_of_slot if self._timelines else _NO_TABLES
        kernel(
            np.ascontiguousarray(slots, dtype=np.int64),
            np.ascontiguousarray(pair_fix, dtype=np.int64),
            np.ascontiguousarray(clock, dtype=np.int64),
            self._pattern_of_slot,
            self._pattern_keys,
            table,
            self._exception_keys,
            self._exception_values,
            WEEK,
            _WEEK_SHIFT,
            _EXCEPTION_SPAN,
            out,
        )
        return out

    def active(self, slots: IntArray, clock: IntArray) -> BoolArray:
        """Whether each slot's schedule is active at each clock reading (element-wise)."""
        self._compile()
        pattern = self._pattern_of_slot[slots]
        out = np.ones(slots.shape, dtype=np.bool_)
        scheduled = np.flatnonzero(pattern != NO_SCHEDULE)
        if scheduled.size == 0:
            return out
        wall = clock[scheduled]
        keys = pattern[scheduled] * WEEK + week_second(wall)
        weekly = (np.searchsorted(self._pattern_keys, keys, side="right") & 1).astype(np.bool_)
        if self._timelines:
            table = self._exception_table_of_slot[slots[scheduled]]
            excepted = np.flatnonzero(table >= 0)
            if excepted.size:
                when = np.clip(wall[excepted], 1, _EXCEPTION_SPAN - 1)
                ekeys = table[excepted] * _EXCEPTION_SPAN + when
                idx = np.searchsorted(self._exception_keys, ekeys, side="right") - 1
                value = self._exception_values[idx]
                forced = value >= 0
                weekly[excepted[forced]] = value[forced] == 1
        out[scheduled] = weekly
        return out
