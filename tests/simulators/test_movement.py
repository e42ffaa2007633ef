"""Trajectories look like a life: plausible speeds, no teleporting, home every night."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tagwatch.simulators.geo import distance_m
from tagwatch.simulators.movement import (
    SPEED_MPS,
    GoStop,
    ItineraryError,
    Leg,
    Mode,
    Place,
    Routine,
    StayStop,
    build_trajectory,
    routine_stops,
    street_path,
)

CAPE_TOWN = ZoneInfo("Africa/Johannesburg")
HOME = Place("home", 18.4722, -33.9379)
WORK = Place("work", 18.4200, -33.9203)
SHOP = Place("shop", 18.4690, -33.9415)
START = datetime(2026, 11, 23, 6, 0, tzinfo=CAPE_TOWN)  # a Monday


def _trip(mode: Mode, seed: int = 1):
    t0 = START.timestamp()
    stops = [StayStop(HOME, until=t0 + 600), GoStop(WORK, mode), StayStop(WORK)]
    return build_trajectory(t0, t0 + 86400, stops, random.Random(seed))


@pytest.mark.parametrize("mode", [Mode.FOOT, Mode.CAR])
def test_legs_move_at_plausible_speeds_without_teleporting(mode):
    trajectory = _trip(mode)
    leg = next(e for e in trajectory.episodes if isinstance(e, Leg))
    low, high = SPEED_MPS[mode]
    moving = [s for s in leg.speeds if s > 0]
    assert min(moving) >= low * 0.95 and max(moving) <= high * 1.05
    previous = trajectory.at(leg.start - 1)
    t = leg.start - 1
    while t < leg.end + 5:
        t += 1.0
        here = trajectory.at(t)
        assert distance_m((previous.lon, previous.lat), (here.lon, here.lat)) <= high * 1.05 + 0.01
        previous = here
    assert distance_m((previous.lon, previous.lat), WORK.point) < 1.0
    length = sum(distance_m(a, b) for a, b in itertools.pairwise(leg.points))
    detour = length / distance_m(HOME.point, WORK.point)
    assert 1.0 <= detour <= 1.5  # a street grid, not a bee line


def test_street_paths_end_exactly_at_the_destination():
    for seed in range(20):
        path = street_path(HOME.point, WORK.point, Mode.CAR, random.Random(seed))
        assert path[0] == HOME.point and path[-1] == WORK.point


def test_a_stay_reports_the_place_and_its_sky():
    trajectory = _trip(Mode.CAR)
    here = trajectory.at(START.timestamp() + 60)
    assert here.place == "home" and here.speed_mps == 0.0 and here.heading_deg is None


def test_leaving_before_arriving_is_an_itinerary_error():
    t0 = START.timestamp()
    stops = [
        StayStop(HOME, until=t0 + 600),
        GoStop(WORK, Mode.FOOT),
        StayStop(WORK, until=t0 + 700),  # a 5 km walk does not take 100 s
    ]
    with pytest.raises(ItineraryError, match="only gets there"):
        build_trajectory(t0, t0 + 86400, stops, random.Random(1), ["a", "b", "c"])


def test_staying_somewhere_one_never_went_is_an_itinerary_error():
    t0 = START.timestamp()
    with pytest.raises(ItineraryError, match="add a `go` first"):
        build_trajectory(t0, t0 + 3600, [StayStop(HOME), StayStop(WORK)], random.Random(1))


def test_arrive_times_the_departure():
    t0 = START.timestamp()
    arrive = t0 + 3 * 3600
    stops = [StayStop(HOME), GoStop(WORK, Mode.CAR, arrive=arrive), StayStop(WORK)]
    trajectory = build_trajectory(t0, t0 + 86400, stops, random.Random(2))
    leg = next(e for e in trajectory.episodes if isinstance(e, Leg))
    assert leg.end == pytest.approx(arrive)


@pytest.mark.parametrize("seed", range(5))
def test_a_generated_week_is_home_every_night_and_home_by_the_promised_time(seed):
    routine = Routine(HOME, WORK, (SHOP,), home_by=time(18, 30), shop_chance=0.8)
    end = START + timedelta(days=7)
    stops = routine_stops(routine, START, end, random.Random(seed))
    trajectory = build_trajectory(
        START.timestamp(), end.timestamp(), stops, random.Random(seed), tz=CAPE_TOWN
    )
    for day in range(7):
        night = START.replace(hour=2) + timedelta(days=day + 1)
        assert trajectory.at(night.timestamp()).place == "home"
        evening = START.replace(hour=18, minute=30) + timedelta(days=day)
        assert trajectory.at(evening.timestamp()).place == "home"
    weekdays_at_work = sum(
        trajectory.at((START.replace(hour=11) + timedelta(days=d)).timestamp()).place == "work"
        for d in range(7)
    )
    assert weekdays_at_work == 5  # Monday to Friday; the weekend is errands


def test_the_same_seed_gives_the_same_life():
    a, b = _trip(Mode.CAR, seed=9), _trip(Mode.CAR, seed=9)
    assert a.episodes == b.episodes
    assert a.episodes != _trip(Mode.CAR, seed=10).episodes
