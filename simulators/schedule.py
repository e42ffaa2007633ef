"""Zone schedules: weekly windows in the subject's own time zone, and dated exceptions.

A curfew of 19:00–07:00 is a window that starts on one local date and ends on the next; it is
evaluated in the subject's IANA zone, DST included, because that is what the court order means.
The simulators need this twice: to write schedules into the provisioning plan, and for the naive
baseline, which must know when a curfew is on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {
    "daily": DAYS,
    "weekdays": DAYS[:5],
    "weekends": DAYS[5:],
}


@dataclass(frozen=True)
class Window:
    """Active from `start` on each of `days` until `end` (the next day when end <= start)."""

    days: tuple[str, ...]
    start: time
    end: time


@dataclass(frozen=True)
class DatedException:
    """On `day` (local date) the weekly windows starting that day are replaced: by nothing when
    `active` is false, else by the one window `start`–`end`."""

    day: date
    active: bool = False
    start: time | None = None
    end: time | None = None


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...]
    exceptions: tuple[DatedException, ...] = ()

    def windows_starting(self, day: date) -> list[tuple[time, time]]:
        for exception in self.exceptions:
            if exception.day == day:
                if exception.active and exception.start is not None and exception.end is not None:
                    return [(exception.start, exception.end)]
                return []
        name = DAYS[day.weekday()]
        return [(w.start, w.end) for w in self.windows if name in w.days]

    def is_active(self, at: datetime, tz: tzinfo) -> bool:
        """Whether `at` (aware) falls in a window, evaluated in the subject's zone `tz`."""
        local = at.astimezone(tz)
        moment = at.timestamp()
        for day in (local.date() - timedelta(days=1), local.date()):
            for start, end in self.windows_starting(day):
                opens = datetime.combine(day, start, tzinfo=tz)
                closes_on = day if end > start else day + timedelta(days=1)
                closes = datetime.combine(closes_on, end, tzinfo=tz)
                if opens.timestamp() <= moment < closes.timestamp():
                    return True
        return False

    def shifted(self, days: int) -> Schedule:
        """The same schedule for a scenario replayed `days` later: dated exceptions move too."""
        if days == 0:
            return self
        moved = tuple(replace(e, day=e.day + timedelta(days=days)) for e in self.exceptions)
        return Schedule(self.windows, moved)

    def to_json(self) -> dict[str, Any]:
        """The zones API's schedule JSON (the shape `geofence.schedule.Schedule.from_json`
        reads): weekly windows, and exceptions as local wall-time intervals that remove
        (`active: false`) or add (`active: true`) time. A dated replacement becomes the added
        window plus the removed parts of that day's weekly windows it does not cover, so the
        intervals never overlap and no precedence rule is needed to read them."""
        exceptions: list[dict[str, Any]] = []
        for exception in self.exceptions:
            added = None
            if exception.active and exception.start is not None and exception.end is not None:
                added = _span(exception.day, exception.start, exception.end)
            name = DAYS[exception.day.weekday()]
            for window in self.windows:
                if name in window.days:
                    removed = _span(exception.day, window.start, window.end)
                    for low, high in _subtract(removed, added):
                        exceptions.append(
                            {"start": _wall(low), "end": _wall(high), "active": False}
                        )
            if added is not None:
                exceptions.append(
                    {"start": _wall(added[0]), "end": _wall(added[1]), "active": True}
                )
        return {
            "weekly": [
                {
                    "days": list(w.days),
                    "start": w.start.strftime("%H:%M"),
                    "end": w.end.strftime("%H:%M"),
                }
                for w in self.windows
            ],
            "exceptions": exceptions,
        }


WallTime = tuple[date, time]


def _span(day: date, start: time, end: time) -> tuple[WallTime, WallTime]:
    return (day, start), (day if end > start else day + timedelta(days=1), end)


def _subtract(
    span: tuple[WallTime, WallTime], cut: tuple[WallTime, WallTime] | None
) -> list[tuple[WallTime, WallTime]]:
    low, high = span
    if cut is None or cut[1] <= low or cut[0] >= high:
        return [span]
    pieces = []
    if cut[0] > low:
        pieces.append((low, cut[0]))
    if cut[1] < high:
        pieces.append((cut[1], high))
    return pieces


def _wall(moment: WallTime) -> str:
    return f"{moment[0].isoformat()}T{moment[1].strftime('%H:%M')}"


CURFEW_DEFAULT = Schedule((Window(DAYS, time(19, 0), time(7, 0)),))
"""FIELD.md and DESIGN.md: curfew is usually home, 19:00–07:00."""
