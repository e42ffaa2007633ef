# Naive datetimes here are wall-clock readings on purpose: that is what a schedule is written in.
# ruff: noqa: DTZ001
"""Schedules: weekly windows on the subject's wall clock, dated exceptions, and the nights the
clocks change.

The rule under test (geofence/schedule.py, docs/geofence.md "Schedules"): a boundary at wall time
``w`` happens at the first instant at which the subject's clock reads ``w`` or later. In the
spring-forward gap that is the first instant after the gap; in the repeated hour of the autumn it
is the first pass, and during the second pass the schedule reads the clock as standing still at
the last second before it went back, so nothing switches twice.

The property test holds ``Schedule.active`` to a slow per-instant reference written with
``zoneinfo`` and ``datetime`` only: ``datetime.fromtimestamp(t, ZoneInfo(tz))`` gives the weekday
and the wall clock (for an instant in the second pass of a repeated hour, the reading just before
the clocks went back), then the windows and exceptions are checked on that naive local time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.geofence import Schedule, ScheduleError, ScheduleException, WeeklyWindow
from tagwatch.geofence.schedule import ScheduleBook, check_timezone, parse_clock
from tests.geofence.strategies import examples

HOUR = 3600
DAY = 86_400
NIGHTS = Schedule(weekly=(WeeklyWindow("19:00", "07:00"),))


def utc(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())  # type: ignore[misc]


def active_at(schedule: Schedule, timezone: str, *instants: float) -> list[bool]:
    return schedule.active(np.asarray(instants, dtype=np.float64), timezone).tolist()


def active_seconds(schedule: Schedule, timezone: str, start: int, stop: int) -> int:
    """How many seconds of [start, stop) the schedule is active (evaluated every second)."""
    return int(schedule.active(np.arange(start, stop, dtype=np.float64), timezone).sum())


# ------------------------------------------------------------------ the slow reference


def _wall_before_the_fold(t: int, zone: ZoneInfo) -> datetime:
    """For an instant in the second pass of a repeated interval (fold=1), the wall reading of the
    last second before the clocks went back: bisect for the first instant of the second pass."""
    lo, hi = t - 6 * HOUR, t
    assert datetime.fromtimestamp(lo, zone).fold == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).fold:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi - 1, zone).replace(tzinfo=None)


def reference_clock(t: float, timezone: str) -> datetime:
    """The naive local time the schedule reads at UTC instant ``t``."""
    zone = ZoneInfo(timezone)
    second = math.floor(t)
    local = datetime.fromtimestamp(second, zone)
    if local.fold:
        return _wall_before_the_fold(second, zone)
    return local.replace(tzinfo=None)


def reference_active(schedule: Schedule, t: float, timezone: str) -> bool:
    local = reference_clock(t, timezone)
    covering = []
    for e in schedule.exceptions:
        if datetime.fromisoformat(e.start) <= local < datetime.fromisoformat(e.end):
            length = datetime.fromisoformat(e.end) - datetime.fromisoformat(e.start)
            covering.append((length, not e.active, e.active))
    if covering:
        return min(covering)[2]  # the shortest exception decides; a tie goes to "active"
    weekday = local.weekday()
    seconds = local.hour * HOUR + local.minute * 60 + local.second
    for window in schedule.weekly:
        start = parse_clock(window.start)
        end = parse_clock(window.end, allow_24=True)
        if start < end:
            if weekday in window.days and start <= seconds < end:
                return True
        elif (weekday in window.days and seconds >= start) or (
            (weekday - 1) % 7 in window.days and seconds < end
        ):
            return True
    return False


def test_the_reference_reads_the_clocks_of_the_documented_transitions() -> None:
    # 2026-10-25 in London: 01:00-02:00 is lived twice (BST, then GMT).
    first_pass = utc(2026, 10, 25, 0, 30)
    second_pass = utc(2026, 10, 25, 1, 30)
    assert datetime.fromtimestamp(first_pass, ZoneInfo("Europe/London")).hour == 1
    assert datetime.fromtimestamp(second_pass, ZoneInfo("Europe/London")).hour == 1
    assert reference_clock(first_pass, "Europe/London") == datetime(2026, 10, 25, 1, 30)
    assert reference_clock(second_pass, "Europe/London") == datetime(2026, 10, 25, 1, 59, 59)
    assert reference_clock(utc(2026, 10, 25, 2, 0), "Europe/London") == datetime(2026, 10, 25, 2)


# ------------------------------------------------------------------ windows across midnight

JOBURG = "Africa/Johannesburg"  # UTC+2 all year, no DST


def test_a_night_window_runs_from_evening_to_morning() -> None:
    # Wednesday 2026-11-18 in Johannesburg; 19:00 local is 17:00 UTC.
    evening = utc(2026, 11, 18, 17, 0)
    assert active_at(NIGHTS, JOBURG, evening - 1, evening) == [False, True]
    morning = utc(2026, 11, 19, 5, 0)  # 07:00 local on Thursday
    assert active_at(NIGHTS, JOBURG, morning - 1, morning) == [True, False]
    assert active_at(NIGHTS, JOBURG, utc(2026, 11, 18, 22, 0)) == [True]  # local midnight
    assert active_at(NIGHTS, JOBURG, utc(2026, 11, 18, 10, 0)) == [False]  # local noon
    assert active_seconds(NIGHTS, JOBURG, evening - HOUR, morning + HOUR) == 12 * HOUR


def test_a_window_belongs_to_the_day_it_starts() -> None:
    friday_night = Schedule(weekly=(WeeklyWindow("19:00", "07:00", days=(4,)),))
    friday_19 = utc(2026, 11, 20, 17, 0)  # Friday 2026-11-20 19:00 local
    assert active_at(
        friday_night,
        JOBURG,
        friday_19 - 1,
        friday_19,
        friday_19 + 11 * HOUR,  # Saturday 06:00
        friday_19 + 12 * HOUR,  # Saturday 07:00
        friday_19 + DAY,  # Saturday 19:00: not a Friday
        friday_19 - DAY + 5 * HOUR,  # Thursday 24:00 = Friday 00:00: Thursday's night is not set
    ) == [False, True, True, False, False, False]


def test_a_sunday_night_window_wraps_into_monday() -> None:
    sunday_night = Schedule(weekly=(WeeklyWindow("22:00", "06:00", days=("sun",)),))
    sunday_22 = utc(2026, 11, 22, 20, 0)
    assert active_at(
        sunday_night,
        JOBURG,
        sunday_22 - 1,
        sunday_22,
        sunday_22 + 2 * HOUR,  # Monday 00:00, the start of the week
        sunday_22 + 8 * HOUR - 1,
        sunday_22 + 8 * HOUR,
        sunday_22 + 7 * DAY + HOUR,  # the next Sunday night
        sunday_22 + 3 * DAY + HOUR,  # Wednesday night
    ) == [False, True, True, True, False, True, False]


def test_whole_days_and_24_00() -> None:
    weekend = Schedule(weekly=(WeeklyWindow("00:00", "24:00", days=(5, 6)),))
    saturday = utc(2026, 11, 20, 22, 0)  # Saturday 00:00 local
    assert active_at(weekend, JOBURG, saturday - 1, saturday, saturday + 2 * DAY - 1) == [
        False,
        True,
        True,
    ]
    assert active_at(weekend, JOBURG, saturday + 2 * DAY) == [False]
    assert active_seconds(weekend, JOBURG, saturday - DAY, saturday + 3 * DAY) == 2 * DAY


def test_overlapping_and_touching_windows_merge() -> None:
    schedule = Schedule(
        weekly=(
            WeeklyWindow("19:00", "23:00"),
            WeeklyWindow("22:00", "02:00"),
            WeeklyWindow("02:00", "07:00"),
        )
    )
    assert schedule.weekly_intervals[0] == (0, 7 * HOUR)  # Sunday night's tail on Monday
    start = utc(2026, 11, 18, 17, 0)
    assert active_seconds(schedule, JOBURG, start - HOUR, start + 13 * HOUR) == 12 * HOUR


def test_fractional_times_are_read_to_the_second_and_arrays_keep_their_shape() -> None:
    evening = utc(2026, 11, 18, 17, 0)
    assert active_at(NIGHTS, JOBURG, evening - 0.25, evening + 0.75) == [False, True]
    grid = np.full((2, 3), float(evening))
    assert NIGHTS.active(grid, JOBURG).shape == (2, 3)
    assert NIGHTS.active(np.zeros(0), JOBURG).shape == (0,)


def test_times_spanning_several_years_in_one_call() -> None:
    times = [utc(year, 6, 15, 20, 0) for year in range(1995, 2041, 5)]  # 22:00 local, a night
    assert all(active_at(NIGHTS, JOBURG, *times))
    assert not any(active_at(NIGHTS, JOBURG, *(t - 10 * HOUR for t in times)))


# ------------------------------------------------------------------ the nights the clocks change


@dataclass(frozen=True)
class Change:
    """A clock change of 2026 in a zone: the UTC instant and the wall clock just before/after."""

    timezone: str
    at: int
    before: datetime
    after: datetime


SPRING = {
    "Europe/London": Change(
        "Europe/London",
        utc(2026, 3, 29, 1, 0),
        datetime(2026, 3, 29, 0, 59, 59),
        datetime(2026, 3, 29, 2, 0),
    ),
    "America/New_York": Change(
        "America/New_York",
        utc(2026, 3, 8, 7, 0),
        datetime(2026, 3, 8, 1, 59, 59),
        datetime(2026, 3, 8, 3, 0),
    ),
    # Southern hemisphere: summer time starts in October.
    "Australia/Sydney": Change(
        "Australia/Sydney",
        utc(2026, 10, 3, 16, 0),
        datetime(2026, 10, 4, 1, 59, 59),
        datetime(2026, 10, 4, 3, 0),
    ),
}
AUTUMN = {
    "Europe/London": Change(
        "Europe/London",
        utc(2026, 10, 25, 1, 0),
        datetime(2026, 10, 25, 1, 59, 59),
        datetime(2026, 10, 25, 1, 0),
    ),
    "America/New_York": Change(
        "America/New_York",
        utc(2026, 11, 1, 6, 0),
        datetime(2026, 11, 1, 1, 59, 59),
        datetime(2026, 11, 1, 1, 0),
    ),
    # ... and ends in April.
    "Australia/Sydney": Change(
        "Australia/Sydney",
        utc(2026, 4, 4, 16, 0),
        datetime(2026, 4, 5, 2, 59, 59),
        datetime(2026, 4, 5, 2, 0),
    ),
}
DST_ZONES = sorted(SPRING)


@pytest.mark.parametrize("change", [*SPRING.values(), *AUTUMN.values()], ids=repr)
def test_the_clock_changes_are_where_the_tests_expect_them(change: Change) -> None:
    zone = ZoneInfo(change.timezone)
    before = datetime.fromtimestamp(change.at - 1, zone)
    after = datetime.fromtimestamp(change.at, zone)
    assert before.replace(tzinfo=None) == change.before
    assert after.replace(tzinfo=None) == change.after
    assert after.utcoffset() != before.utcoffset()


def _local(change: Change, clock: str, days: int = 0) -> int:
    """The first UTC instant the zone's clock reads ``clock`` (HH:MM) on the day of the change
    plus ``days``, or later: the rule under test, written with zoneinfo's two folds and a gap
    check."""
    zone = ZoneInfo(change.timezone)
    day = change.after.date() + timedelta(days=days)
    hh, mm = (int(p) for p in clock.split(":"))
    wall = datetime(day.year, day.month, day.day, hh, mm)
    if change.before < wall < change.after:  # in the gap: the first instant after it
        return change.at
    first = datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone, fold=0)
    return int(first.timestamp())


@pytest.mark.parametrize("timezone", DST_ZONES)
def test_a_night_window_is_an_hour_shorter_on_the_spring_night(timezone: str) -> None:
    change = SPRING[timezone]
    start = _local(change, "19:00", -1)
    end = _local(change, "07:00")
    assert end - start == 11 * HOUR
    assert active_at(NIGHTS, timezone, start - 1, start, end - 1, end) == [
        False,
        True,
        True,
        False,
    ]
    assert active_seconds(NIGHTS, timezone, start - HOUR, end + HOUR) == 11 * HOUR
    # A week later it is 12 hours again.
    later = _local(change, "19:00", 6)
    assert active_seconds(NIGHTS, timezone, later - HOUR, later + 13 * HOUR) == 12 * HOUR


@pytest.mark.parametrize("timezone", DST_ZONES)
def test_a_night_window_is_an_hour_longer_on_the_autumn_night(timezone: str) -> None:
    change = AUTUMN[timezone]
    start = _local(change, "19:00", -1)
    end = _local(change, "07:00")
    assert end - start == 13 * HOUR
    assert active_at(NIGHTS, timezone, start - 1, start, end - 1, end) == [
        False,
        True,
        True,
        False,
    ]
    # No flicker: active through both passes of the repeated hour.
    assert active_seconds(NIGHTS, timezone, start - HOUR, end + HOUR) == 13 * HOUR


@pytest.mark.parametrize("timezone", DST_ZONES)
def test_a_boundary_in_the_gap_happens_when_the_gap_ends(timezone: str) -> None:
    change = SPRING[timezone]
    gap_start = change.before + timedelta(seconds=1)  # the first wall time that never happens
    middle = gap_start + (change.after - gap_start) / 2
    weekday = change.after.weekday()
    clock = middle.strftime("%H:%M")
    late = Schedule(weekly=(WeeklyWindow(clock, "12:00", days=(weekday,)),))
    early = Schedule(weekly=(WeeklyWindow("00:00", clock, days=(weekday,)),))
    assert active_at(late, timezone, change.at - 1, change.at) == [False, True]
    assert active_at(early, timezone, change.at - 1, change.at) == [True, False]
    # A window that lies wholly in the gap does not happen that day, and does a week later.
    inside = Schedule(
        weekly=(
            WeeklyWindow(
                gap_start.strftime("%H:%M"),
                (gap_start + timedelta(minutes=30)).strftime("%H:%M"),
                days=(weekday,),
            ),
        )
    )
    assert active_seconds(inside, timezone, change.at - 3 * HOUR, change.at + 3 * HOUR) == 0
    week = change.at + 7 * DAY
    assert active_seconds(inside, timezone, week - 3 * HOUR, week + 3 * HOUR) == 30 * 60


@pytest.mark.parametrize("timezone", DST_ZONES)
def test_a_boundary_in_the_repeated_hour_happens_once_at_its_first_pass(timezone: str) -> None:
    change = AUTUMN[timezone]
    repeated = change.after  # first wall second of the repeated interval
    length = int((change.before - change.after).total_seconds()) + 1  # 3600
    first_pass_start = change.at - length
    weekday = repeated.weekday()
    half = (repeated + timedelta(minutes=30)).strftime("%H:%M")
    # A window that ends in the repeated hour ends at the first pass and stays ended.
    ends = Schedule(weekly=(WeeklyWindow("00:00", half, days=(weekday,)),))
    first_half = first_pass_start + 30 * 60
    assert active_at(ends, timezone, first_half - 1, first_half) == [True, False]
    assert active_seconds(ends, timezone, change.at, change.at + length) == 0
    # A window that starts there starts at the first pass and stays on through the second.
    starts = Schedule(weekly=(WeeklyWindow(half, "12:00", days=(weekday,)),))
    assert active_at(starts, timezone, first_half - 1, first_half) == [False, True]
    assert active_seconds(starts, timezone, change.at, change.at + length) == length
    # A window inside the repeated hour happens once, for its wall-clock length.
    inside = Schedule(
        weekly=(
            WeeklyWindow(
                repeated.strftime("%H:%M"),
                (repeated + timedelta(minutes=45)).strftime("%H:%M"),
                days=(weekday,),
            ),
        )
    )
    total = active_seconds(inside, timezone, change.at - 3 * HOUR, change.at + 3 * HOUR)
    assert total == 45 * 60
    assert active_seconds(inside, timezone, first_pass_start, first_pass_start + 45 * 60) == total


def test_johannesburg_is_steady_on_the_nights_other_zones_change() -> None:
    nights = [c.after.date() for c in (*SPRING.values(), *AUTUMN.values())]
    for day in nights:
        start = int(datetime(day.year, day.month, day.day, 17, 0, tzinfo=UTC).timestamp())
        start -= DAY  # 19:00 local the evening before
        assert active_seconds(NIGHTS, JOBURG, start - HOUR, start + 13 * HOUR) == 12 * HOUR
        assert active_at(NIGHTS, JOBURG, start - 1, start, start + 12 * HOUR - 1) == [
            False,
            True,
            True,
        ]
        assert active_at(NIGHTS, JOBURG, start + 12 * HOUR) == [False]


def test_a_half_hour_shift_follows_the_same_rule() -> None:
    # Lord Howe Island moves its clocks by 30 minutes; 2026-04-05 01:30-02:00 is lived twice.
    timezone = "Australia/Lord_Howe"
    change = utc(2026, 4, 4, 15, 0)
    window = Schedule(weekly=(WeeklyWindow("01:00", "01:45", days=(6,)),))
    assert active_seconds(window, timezone, change - 3 * HOUR, change + 3 * HOUR) == 45 * 60
    assert active_at(window, timezone, change - 15 * 60 - 1, change - 15 * 60) == [True, False]
    assert active_seconds(window, timezone, change, change + 30 * 60) == 0


# ------------------------------------------------------------------ dated exceptions


def test_an_exception_removes_time_from_a_window() -> None:
    outing = Schedule(
        weekly=NIGHTS.weekly,
        exceptions=(ScheduleException("2026-11-18T21:00", "2026-11-18T23:00", active=False),),
    )
    at_21 = utc(2026, 11, 18, 19, 0)
    assert active_at(outing, JOBURG, at_21 - 1, at_21, at_21 + 2 * HOUR - 1, at_21 + 2 * HOUR) == [
        True,
        False,
        False,
        True,
    ]
    assert active_at(outing, JOBURG, at_21 + DAY) == [True]  # only that date
    evening = utc(2026, 11, 18, 17, 0)
    assert active_seconds(outing, JOBURG, evening, evening + 12 * HOUR) == 10 * HOUR


def test_an_exception_adds_time_outside_the_windows() -> None:
    holiday = Schedule(
        weekly=NIGHTS.weekly,
        exceptions=(ScheduleException("2026-12-25T00:00", "2026-12-26T00:00", active=True),),
    )
    noon = utc(2026, 12, 25, 10, 0)
    assert active_at(holiday, JOBURG, noon, noon - DAY, noon + DAY) == [True, False, False]
    christmas_eve_19 = utc(2026, 12, 24, 17, 0)
    # The night before, the whole of Christmas day, the night after: 12 + 24 + 7 - 7 hours.
    total = active_seconds(holiday, JOBURG, christmas_eve_19, christmas_eve_19 + 2 * DAY)
    assert total == (5 + 24 + 7) * HOUR


def test_the_shortest_exception_decides_and_a_tie_goes_to_active() -> None:
    schedule = Schedule(
        weekly=NIGHTS.weekly,
        exceptions=(
            ScheduleException("2026-12-25T00:00", "2026-12-26T00:00", active=True),
            ScheduleException("2026-12-25T10:00", "2026-12-25T12:00", active=False),
            ScheduleException("2026-12-25T14:00", "2026-12-25T15:00", active=False),
            ScheduleException("2026-12-25T14:00", "2026-12-25T15:00", active=True),
        ),
    )
    local = {h: utc(2026, 12, 25, h - 2, 0) for h in (9, 10, 11, 12, 14)}
    assert active_at(schedule, JOBURG, *local.values()) == [True, False, False, True, True]


def test_an_exception_in_the_gap_starts_when_the_gap_ends() -> None:
    change = SPRING["Europe/London"]
    schedule = Schedule(
        exceptions=(ScheduleException("2026-03-29T01:30", "2026-03-29T03:00", active=True),)
    )
    assert active_at(schedule, "Europe/London", change.at - 1, change.at) == [False, True]
    assert active_seconds(schedule, "Europe/London", change.at - HOUR, change.at + 3 * HOUR) == (
        HOUR
    )


def test_exceptions_only_and_removing_a_whole_night() -> None:
    only = Schedule(
        exceptions=(ScheduleException("2026-11-18T19:00", "2026-11-19T07:00", active=True),)
    )
    evening = utc(2026, 11, 18, 17, 0)
    assert active_seconds(only, JOBURG, evening - DAY, evening + 2 * DAY) == 12 * HOUR
    freed = Schedule(
        weekly=NIGHTS.weekly,
        exceptions=(ScheduleException("2026-11-18 12:00", "2026-11-19 12:00", active=False),),
    )
    assert active_seconds(freed, JOBURG, evening, evening + 12 * HOUR) == 0


# ------------------------------------------------------------------ validation and JSON


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeeklyWindow("7:00", "19:00"), "not HH:MM"),
        (lambda: WeeklyWindow("25:00", "19:00"), "out of range"),
        (lambda: WeeklyWindow("24:00", "19:00"), "out of range"),
        (lambda: WeeklyWindow("07:60", "19:00"), "out of range"),
        (lambda: WeeklyWindow("07:00", "07:00"), "starts when it ends"),
        (lambda: WeeklyWindow("07:00", "19:00", days=()), "at least one day"),
        (lambda: WeeklyWindow("07:00", "19:00", days=(7,)), "not a weekday"),
        (lambda: WeeklyWindow("07:00", "19:00", days=(True,)), "not a weekday"),
        (lambda: WeeklyWindow("07:00", "19:00", days=("someday",)), "not a weekday"),
        (lambda: ScheduleException("2026-01-02T00:00", "2026-01-01T00:00", True), "does not end"),
        (lambda: ScheduleException("2026-01-01T00:00", "2026-01-01T00:00", True), "does not end"),
        (lambda: ScheduleException("2026-01-01", "2026-01-02T00:00", True), "no time of day"),
        (lambda: ScheduleException("2026-13-01T00:00", "2027-01-01T00:00", True), "not YYYY"),
        (lambda: ScheduleException("2026-01-01T00:00Z", "2026-01-02T00:00", True), "offset"),
        (
            lambda: ScheduleException("2026-01-01T00:00+02:00", "2026-01-02T00:00", True),
            "offset",
        ),
        (lambda: Schedule(), "at least one"),
        (lambda: Schedule.from_json({"weekly": [], "extra": 1}), "unknown schedule fields"),
        (lambda: Schedule.from_json([]), "JSON object"),  # type: ignore[arg-type]
        (lambda: check_timezone("Mars/Olympus_Mons"), "unknown IANA time zone"),
        (lambda: check_timezone("../etc/passwd"), "unknown IANA time zone"),
    ],
)
def test_schedules_that_cannot_mean_one_thing_are_refused(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ScheduleError, match=message):
        make()


def test_json_round_trip() -> None:
    obj = {
        "weekly": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "20:00", "end": "06:00"},
            {"days": ["sat", "sun"], "start": "22:00", "end": "24:00"},
        ],
        "exceptions": [{"start": "2026-12-24T19:00", "end": "2026-12-24T23:00", "active": False}],
    }
    schedule = Schedule.from_json(obj)
    assert schedule.to_json() == obj
    assert Schedule.from_json(schedule.to_json()) == schedule
    assert Schedule.from_json({"weekly": [{"start": "19:00", "end": "07:00"}]}) == NIGHTS
    assert WeeklyWindow("19:00", "07:00", days=("Fri", 0, "monday")).days == (0, 4)


# ------------------------------------------------------------------ many schedules at once


def test_schedule_book_handles_slots_added_after_a_compile() -> None:
    book = ScheduleBook()
    with_exception = Schedule(
        weekly=NIGHTS.weekly,
        exceptions=(ScheduleException("2026-11-18T21:00", "2026-11-18T23:00", active=False),),
    )
    book.assign(0, with_exception)
    clock = np.array([0], dtype=np.int64)
    assert book.active(np.array([0]), clock).tolist() == [True]  # 1970-01-01 00:00, a night
    book.assign(40, NIGHTS)  # grows the slot arrays after the tables were compiled
    book.assign(41, None)
    assert book.active(np.array([40, 41, 0]), np.zeros(3, np.int64)).tolist() == [True] * 3
    book.clear(0)
    book.assign(0, Schedule(weekly=(WeeklyWindow("08:00", "09:00"),)))
    assert book.active(np.array([0, 40]), np.zeros(2, np.int64)).tolist() == [False, True]


# ------------------------------------------------------------------ the property

PROPERTY_ZONES = [
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Africa/Johannesburg",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "UTC",
]
CLOCKS = ["00:00", "00:30", "01:00", "01:30", "01:59", "02:00", "02:30", "03:00", "07:00", "19:00"]


@lru_cache(maxsize=64)
def transitions(timezone: str, year: int) -> tuple[int, ...]:
    """UTC instants at which the zone's offset changes in a year (an hourly scan, then a bisect)."""
    zone = ZoneInfo(timezone)
    out = []
    t = utc(year, 1, 1)
    end = utc(year + 1, 1, 1)
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    while t < end:
        nxt = t + 1800
        if datetime.fromtimestamp(nxt, zone).utcoffset() != offset:
            lo, hi = t, nxt
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
            offset = datetime.fromtimestamp(nxt, zone).utcoffset()
        t = nxt
    return tuple(out)


@st.composite
def clocks(draw: st.DrawFn, allow_24: bool = False) -> str:
    if draw(st.booleans()):
        choices = [*CLOCKS, "24:00"] if allow_24 else CLOCKS
        return draw(st.sampled_from(choices))
    minute = draw(st.integers(0, 24 * 60 - 1))
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> WeeklyWindow:
    start = draw(clocks())
    end = draw(clocks(allow_24=True).filter(lambda e: e != start))
    days = draw(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True))
    return WeeklyWindow(start, end, days=tuple(days))


@st.composite
def schedule_cases(draw: st.DrawFn) -> tuple[Schedule, str, list[float]]:
    timezone = draw(st.sampled_from(PROPERTY_ZONES))
    year = draw(st.sampled_from([2025, 2026, 2027]))
    changes = transitions(timezone, year)
    anchors = [*changes, utc(year, 1, 1), utc(year, 7, 1)]
    weekly = draw(st.lists(windows(), max_size=3))
    exceptions = []
    for _ in range(draw(st.integers(0 if weekly else 1, 3))):
        anchor = draw(st.sampled_from(anchors))
        local = datetime.fromtimestamp(anchor, ZoneInfo(timezone)).replace(tzinfo=None)
        start = local.replace(second=0) + timedelta(minutes=draw(st.integers(-36 * 60, 36 * 60)))
        length = timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
        exceptions.append(
            ScheduleException(
                start.isoformat(timespec="minutes"),
                (start + length).isoformat(timespec="minutes"),
                active=draw(st.booleans()),
            )
        )
    schedule = Schedule(weekly=tuple(weekly), exceptions=tuple(exceptions))
    times: list[float] = []
    for _ in range(draw(st.integers(1, 40))):
        anchor = draw(st.sampled_from(anchors))
        offset = draw(
            st.one_of(
                st.integers(-3 * HOUR, 3 * HOUR),
                st.integers(-8 * DAY, 8 * DAY),
                st.sampled_from([-1, 0, 1, 1799, 1800, 3599, 3600, 3601]),
            )
        )
        fraction = draw(st.sampled_from([0.0, 0.0, 0.5, 0.999]))
        times.append(anchor + offset + fraction)
    return schedule, timezone, times


@examples(400)
@given(schedule_cases())
def test_active_equals_the_per_instant_zoneinfo_reference(
    case: tuple[Schedule, str, list[float]],
) -> None:
    schedule, timezone, times = case
    got = schedule.active(np.asarray(times), timezone).tolist()
    want = [reference_active(schedule, t, timezone) for t in times]
    wrong = [
        (datetime.fromtimestamp(t, UTC).isoformat(), reference_clock(t, timezone).isoformat(), g, w)
        for t, g, w in zip(times, got, want, strict=True)
        if g != w
    ]
    assert not wrong, wrong


def test_the_property_covers_both_hemispheres_and_a_steady_zone() -> None:
    assert len(transitions("Australia/Sydney", 2026)) == 2
    assert len(transitions("Europe/London", 2026)) == 2
    assert transitions("Africa/Johannesburg", 2026) == ()
    assert datetime.fromtimestamp(transitions("Australia/Sydney", 2026)[0], UTC).month == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"weekly": "never"},
        {"weekly": [1]},
        {"weekly": [{"days": "x"}]},
        {"weekly": [{}]},
        {"weekly": [{"start": "19:00", "end": "07:00", "days": "mon"}]},
        {"exceptions": 5},
        {"exceptions": [{"start": "2026-12-24T19:00"}]},
    ],
)
def test_a_malformed_schedule_is_a_schedule_error_with_a_reason(bad: object) -> None:
    """Anything a client or a database row can hold is refused as a ScheduleError (the engine
    skips such a zone with a log line), never an AttributeError or KeyError."""
    with pytest.raises(ScheduleError):
        Schedule.from_json(bad)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(
        st.floats(1_700_000_000.0, 1_900_000_000.0, allow_nan=False), min_size=1, max_size=40
    ),
    tz=st.sampled_from(["Africa/Johannesburg", "Europe/London", "America/New_York", "UTC"]),
)
def test_the_schedule_clock_of_a_batch_is_each_fixs_own(times: list[float], tz: str) -> None:
    """A batch within one year skips the per-fix year arithmetic; one across New Year does not.
    Either way each fix gets the clock it gets alone."""
    from tagwatch.geofence.schedule import schedule_clock

    batch = np.asarray(times)
    alone = [int(schedule_clock(np.asarray([t]), tz)[0]) for t in times]
    assert schedule_clock(batch, tz).tolist() == alone


@examples(200)
@given(
    st.lists(st.one_of(st.none(), schedule_cases()), min_size=1, max_size=5),
    st.data(),
)
def test_the_compiled_pass_over_pairs_answers_as_the_numpy_path(
    cases: list[tuple[Schedule, str, list[float]] | None], data: st.DataObject
) -> None:
    """ScheduleBook.active_pairs (compiled with Numba when installed) against ScheduleBook.active
    (NumPy) for pairs of random slots, scheduled or not, with and without exceptions, and fixes
    near the clock changes."""
    from tagwatch.geofence.schedule import schedule_clock

    book = ScheduleBook()
    slots_used = data.draw(
        st.lists(st.integers(0, 70), min_size=len(cases), max_size=len(cases), unique=True)
    )
    times: list[float] = [0.0]
    timezone = "UTC"
    for slot, case in zip(slots_used, cases, strict=True):
        book.assign(slot, None if case is None else case[0])
        if case is not None:
            times.extend(case[2])
            timezone = case[1]
    clock = schedule_clock(np.asarray(times), timezone)
    n = data.draw(st.integers(0, 60))
    slots = np.asarray(data.draw(st.lists(st.sampled_from(slots_used), min_size=n, max_size=n)))
    pair_fix = np.asarray(
        data.draw(st.lists(st.integers(0, len(times) - 1), min_size=n, max_size=n))
    )
    slots = slots.astype(np.int64)
    pair_fix = pair_fix.astype(np.int64)
    want = book.active(slots, clock[pair_fix]).tolist()
    assert book.active_pairs(slots, pair_fix, clock).tolist() == want


def test_the_compiled_pass_refuses_a_slot_outside_the_book() -> None:
    pytest.importorskip("numba")
    book = ScheduleBook()
    book.assign(3, NIGHTS)
    clock = np.zeros(1, dtype=np.int64)
    with pytest.raises(IndexError):
        book.active_pairs(np.array([10_000], dtype=np.int64), np.zeros(1, np.int64), clock)
