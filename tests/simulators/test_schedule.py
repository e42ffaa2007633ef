"""Schedules are evaluated in the subject's own zone, across midnight and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from tagwatch.simulators.schedule import CURFEW_DEFAULT, DAYS, DatedException, Schedule, Window

LONDON = ZoneInfo("Europe/London")
CAPE_TOWN = ZoneInfo("Africa/Johannesburg")


def _active(schedule: Schedule, year, month, day, hour, minute, tz) -> bool:
    return schedule.is_active(datetime(year, month, day, hour, minute, tzinfo=tz), tz)


def test_curfew_runs_across_midnight():
    assert _active(CURFEW_DEFAULT, 2026, 11, 23, 19, 0, CAPE_TOWN)
    assert _active(CURFEW_DEFAULT, 2026, 11, 24, 6, 59, CAPE_TOWN)
    assert not _active(CURFEW_DEFAULT, 2026, 11, 24, 7, 0, CAPE_TOWN)
    assert not _active(CURFEW_DEFAULT, 2026, 11, 23, 18, 59, CAPE_TOWN)


def test_curfew_follows_local_time_over_the_spring_dst_change():
    # 2026-03-29: clocks go from 01:00 GMT to 02:00 BST; the curfew still ends at 07:00 local.
    assert CURFEW_DEFAULT.is_active(datetime(2026, 3, 29, 5, 59, tzinfo=UTC), LONDON)
    assert not CURFEW_DEFAULT.is_active(datetime(2026, 3, 29, 6, 0, tzinfo=UTC), LONDON)


def test_weekday_windows_and_dated_exceptions():
    schedule = Schedule(
        (Window(DAYS[:5], time(9, 0), time(17, 0)),),
        (
            DatedException(date(2026, 12, 25), active=False),
            DatedException(date(2026, 12, 24), active=True, start=time(9, 0), end=time(12, 0)),
        ),
    )
    assert _active(schedule, 2026, 12, 23, 16, 0, CAPE_TOWN)
    assert not _active(schedule, 2026, 12, 24, 13, 0, CAPE_TOWN)  # short day
    assert not _active(schedule, 2026, 12, 25, 10, 0, CAPE_TOWN)  # holiday
    assert not _active(schedule, 2026, 12, 26, 10, 0, CAPE_TOWN)  # Saturday


def test_a_lifted_night_also_lifts_its_morning_part():
    schedule = Schedule(CURFEW_DEFAULT.windows, (DatedException(date(2026, 11, 23)),))
    assert not _active(schedule, 2026, 11, 23, 22, 0, CAPE_TOWN)
    assert not _active(schedule, 2026, 11, 24, 6, 0, CAPE_TOWN)
    assert _active(schedule, 2026, 11, 23, 6, 0, CAPE_TOWN)  # the night before still applies


def test_shifting_moves_exceptions_and_json_names_them():
    schedule = Schedule(CURFEW_DEFAULT.windows, (DatedException(date(2026, 11, 23)),))
    moved = schedule.shifted(7)
    assert moved.exceptions[0].day == date(2026, 11, 30)
    assert moved.to_json() == {
        "weekly": [{"days": list(DAYS), "start": "19:00", "end": "07:00"}],
        "exceptions": [{"start": "2026-11-30T19:00", "end": "2026-12-01T07:00", "active": False}],
    }


def test_a_replacement_window_is_written_as_non_overlapping_intervals():
    late = DatedException(date(2026, 12, 24), active=True, start=time(23, 0), end=time(9, 0))
    schedule = Schedule(CURFEW_DEFAULT.windows, (late,))
    assert schedule.to_json()["exceptions"] == [
        {"start": "2026-12-24T19:00", "end": "2026-12-24T23:00", "active": False},
        {"start": "2026-12-24T23:00", "end": "2026-12-25T09:00", "active": True},
    ]


SCHEDULES = [
    CURFEW_DEFAULT,
    Schedule(CURFEW_DEFAULT.windows, (DatedException(date(2026, 3, 28)),)),
    Schedule(
        (Window(DAYS[:5], time(9, 0), time(17, 30)), Window(("sat",), time(22, 0), time(6, 0))),
        (
            DatedException(date(2026, 3, 27), active=True, start=time(12, 0), end=time(14, 0)),
            DatedException(date(2026, 3, 28), active=True, start=time(20, 0), end=time(8, 0)),
        ),
    ),
]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_geofence_core_reads_our_schedules_as_we_mean_them(schedule):
    """The runner hands `to_json()` to the zones API; the platform must agree on every minute,
    here across the spring DST change in London."""
    geofence = pytest.importorskip("tagwatch.geofence.schedule")
    theirs = geofence.Schedule.from_json(schedule.to_json())
    start = datetime(2026, 3, 25, 0, 0, tzinfo=UTC).timestamp()
    times = [start + 600.0 * k for k in range(6 * 24 * 6)]
    ours = [schedule.is_active(datetime.fromtimestamp(t, UTC), LONDON) for t in times]
    assert list(theirs.active(times, "Europe/London")) == ours
