"""Where a subject truly is: a day of a life as stays at places and legs between them.

The truth has to look like a life (night at home, commute, work, shops) so that the noise model
acts on plausible positions, and it has to be exact so that a scenario can say "she was 30 m
outside the zone" and mean it. A trajectory is piecewise linear in time between geodesic
waypoints no more than 1 km apart; walking and driving legs follow a street grid (a staircase of
blocks, about 1.2–1.4 times the straight distance), highway legs follow the given road points.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from enum import StrEnum

from tagwatch.simulators.geo import LonLat, azimuth_deg, densify, destination, distance_m
from tagwatch.simulators.noise import Sky


class Mode(StrEnum):
    FOOT = "foot"
    CAR = "car"
    HIGHWAY = "highway"


SPEED_MPS: dict[Mode, tuple[float, float]] = {
    Mode.FOOT: (1.2, 1.6),  # ~1.4 m/s, the usual pedestrian speed
    Mode.CAR: (8.0, 15.0),  # 30–55 km/h on town streets
    Mode.HIGHWAY: (22.0, 30.0),  # 80–110 km/h
}
BLOCK_M: dict[Mode, tuple[float, float]] = {Mode.FOOT: (60.0, 150.0), Mode.CAR: (250.0, 700.0)}
WALKABLE_M = 1500.0  # a routine walks shorter trips, drives longer ones
SAME_PLACE_M = 60.0


class ItineraryError(ValueError):
    """An itinerary that cannot be followed (times going backwards, teleporting)."""


@dataclass(frozen=True)
class Place:
    name: str
    lon: float
    lat: float
    sky: Sky = Sky.INDOOR
    indoor_acc_m: float | None = None

    @property
    def point(self) -> LonLat:
        return (self.lon, self.lat)


@dataclass(frozen=True)
class StayStop:
    """Stay where the subject is (at `place`, which they must have reached) until a time, for a
    while, or, without either, until the next leg leaves."""

    place: Place | None = None
    until: float | None = None
    duration_s: float | None = None
    sky: Sky | None = None
    indoor_acc_m: float | None = None


@dataclass(frozen=True)
class GoStop:
    """Travel to a place or a point, leaving at `leave` or timed to `arrive`, else at once."""

    target: Place | LonLat
    mode: Mode = Mode.FOOT
    via: tuple[LonLat, ...] = ()
    leave: float | None = None
    arrive: float | None = None
    sky: Sky | None = None
    speed_mps: float | None = None
    direct: bool = False


Stop = StayStop | GoStop


@dataclass(frozen=True)
class Stay:
    start: float
    end: float
    lon: float
    lat: float
    place: str | None
    sky: Sky
    indoor_acc_m: float | None


@dataclass(frozen=True)
class Leg:
    start: float
    end: float
    times: tuple[float, ...]
    points: tuple[LonLat, ...]
    speeds: tuple[float, ...]  # per segment, m/s (0 while waiting at a corner)
    headings: tuple[float, ...]  # per segment, degrees from north
    mode: Mode
    sky: Sky
    destination: str | None


@dataclass(frozen=True)
class TruePosition:
    lon: float
    lat: float
    speed_mps: float
    heading_deg: float | None
    place: str | None
    sky: Sky
    indoor_acc_m: float | None
    mode: Mode | None


class Trajectory:
    """The ground truth of one subject, queryable at any time."""

    def __init__(self, episodes: Sequence[Stay | Leg]) -> None:
        if not episodes:
            raise ItineraryError("a trajectory needs at least one stay")
        self.episodes = tuple(episodes)
        self._starts = [episode.start for episode in self.episodes]

    @property
    def start(self) -> float:
        return self.episodes[0].start

    @property
    def end(self) -> float:
        return self.episodes[-1].end

    def stays(self) -> list[Stay]:
        return [episode for episode in self.episodes if isinstance(episode, Stay)]

    def at(self, t: float) -> TruePosition:
        index = max(0, bisect.bisect_right(self._starts, t) - 1)
        episode = self.episodes[index]
        if isinstance(episode, Stay):
            return TruePosition(
                episode.lon,
                episode.lat,
                0.0,
                None,
                episode.place,
                episode.sky,
                episode.indoor_acc_m,
                None,
            )
        if t >= episode.end:
            lon, lat = episode.points[-1]
            return TruePosition(lon, lat, 0.0, None, episode.destination, episode.sky, None, None)
        k = min(len(episode.speeds) - 1, max(0, bisect.bisect_right(episode.times, t) - 1))
        t0, t1 = episode.times[k], episode.times[k + 1]
        share = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        (lon0, lat0), (lon1, lat1) = episode.points[k], episode.points[k + 1]
        speed = episode.speeds[k]
        return TruePosition(
            lon0 + share * (lon1 - lon0),
            lat0 + share * (lat1 - lat0),
            speed,
            episode.headings[k] if speed > 0 else None,
            None,
            episode.sky,
            None,
            episode.mode,
        )


def street_path(a: LonLat, b: LonLat, mode: Mode, rng: random.Random) -> list[LonLat]:
    """A staircase along a street grid of random orientation: blocks of 60–150 m on foot,
    250–700 m by car, turns split unevenly so that no two trips look alike."""
    low, high = BLOCK_M[mode]
    length = distance_m(a, b)
    if length < 2 * low:
        return [a, b]
    grid = rng.uniform(0.0, 90.0)
    angle = math.radians(azimuth_deg(a, b) - grid)
    along_u, along_v = length * math.cos(angle), length * math.sin(angle)
    block = rng.uniform(low, high)
    steps = min(40, max(1, round(max(abs(along_u), abs(along_v)) / block)))

    def parts(total: float) -> list[float]:
        weights = [rng.uniform(0.5, 1.5) for _ in range(steps)]
        scale = total / sum(weights)
        return [w * scale for w in weights]

    pieces_u, pieces_v = parts(along_u), parts(along_v)
    points = [a]
    here = a
    u_first = rng.random() < 0.5
    for du, dv in zip(pieces_u, pieces_v, strict=True):
        for axis, metres in ((0, du), (1, dv)) if u_first else ((1, dv), (0, du)):
            if abs(metres) < 1.0:
                continue
            bearing = grid + (90.0 if axis == 1 else 0.0) + (180.0 if metres < 0 else 0.0)
            here = destination(here[0], here[1], bearing, abs(metres))
            points.append(here)
    points[-1] = b
    return points


def _leg(
    start: float,
    path: list[LonLat],
    mode: Mode,
    sky: Sky,
    destination_name: str | None,
    speed_mps: float | None,
    rng: random.Random,
) -> Leg:
    points = densify(path)
    times, speeds, headings, kept = [start], [], [], [points[0]]
    low, high = SPEED_MPS[mode]
    walking_pace = rng.uniform(low, high)
    for a, b in itertools.pairwise(points):
        length = distance_m(a, b)
        if length < 0.5:
            continue
        if speed_mps is not None:
            speed = speed_mps
        elif mode is Mode.FOOT:
            speed = walking_pace * rng.uniform(0.95, 1.05)
        else:
            speed = rng.uniform(low, high)
        heading = azimuth_deg(a, b)
        if mode is Mode.CAR and len(kept) > 1 and rng.random() < 0.3:
            kept.append(a)  # a red light or a junction: wait at the corner
            times.append(times[-1] + rng.uniform(5.0, 40.0))
            speeds.append(0.0)
            headings.append(heading)
        kept.append(b)
        times.append(times[-1] + length / speed)
        speeds.append(speed)
        headings.append(heading)
    if len(kept) == 1:
        kept.append(points[-1])
        times.append(start + 1.0)
        speeds.append(0.0)
        headings.append(0.0)
    return Leg(
        start,
        times[-1],
        tuple(times),
        tuple(kept),
        tuple(speeds),
        tuple(headings),
        mode,
        sky,
        destination_name,
    )


def build_trajectory(
    start: float,
    end: float,
    stops: Sequence[Stop],
    rng: random.Random,
    describe: Sequence[str] | None = None,
    tz: tzinfo = UTC,
) -> Trajectory:
    """Follow the stops from `start`, filling every gap with a stay, up to `end` at least.

    `describe[i]` names stop i in errors (a scenario passes "subjects[0].itinerary[3]"), and
    times in errors are shown in `tz`, the scenario's own zone."""

    def _iso(t: float) -> str:
        return datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")

    names = list(describe) if describe is not None else [f"stop {i}" for i in range(len(stops))]
    first = stops[0] if stops else None
    if not isinstance(first, StayStop) or first.place is None:
        raise ItineraryError("an itinerary starts with a stay at a named place (where they wake)")
    here = first.place.point
    place: str | None = first.place.name
    sky = first.sky or first.place.sky
    indoor_acc = first.indoor_acc_m or first.place.indoor_acc_m
    t = start
    episodes: list[Stay | Leg] = []

    def stay_until(until: float) -> None:
        nonlocal t
        if until > t:
            episodes.append(Stay(t, until, here[0], here[1], place, sky, indoor_acc))
            t = until

    for index, stop in enumerate(stops):
        label = names[index]
        if isinstance(stop, StayStop):
            if stop.place is not None:
                if distance_m(here, stop.place.point) > SAME_PLACE_M:
                    raise ItineraryError(
                        f"{label}: stays at {stop.place.name!r} but the subject is "
                        f"{distance_m(here, stop.place.point):.0f} m away; add a `go` first"
                    )
                place = stop.place.name
                sky = stop.sky or stop.place.sky
                indoor_acc = stop.indoor_acc_m or stop.place.indoor_acc_m
            else:
                sky = stop.sky or sky
                indoor_acc = stop.indoor_acc_m or indoor_acc
            if stop.until is not None:
                if stop.until < t:
                    raise ItineraryError(
                        f"{label}: stays until {_iso(stop.until)} but the subject only gets "
                        f"there at {_iso(t)}"
                    )
                stay_until(stop.until)
            elif stop.duration_s is not None:
                stay_until(t + stop.duration_s)
            else:
                following = stops[index + 1] if index + 1 < len(stops) else None
                if isinstance(following, GoStop) and (
                    following.leave is None and following.arrive is None
                ):
                    raise ItineraryError(
                        f"{label}: a stay without `until` or `for` needs the next `go` to have "
                        "`leave` or `arrive`"
                    )
            continue

        target = stop.target.point if isinstance(stop.target, Place) else stop.target
        direct = stop.direct or bool(stop.via) or stop.mode is Mode.HIGHWAY
        path = [here, *stop.via, target] if direct else street_path(here, target, stop.mode, rng)
        name = stop.target.name if isinstance(stop.target, Place) else None
        leg_sky = stop.sky or Sky.OPEN
        draft = _leg(0.0, path, stop.mode, leg_sky, name, stop.speed_mps, rng)
        leave = stop.leave
        if stop.arrive is not None:
            leave = stop.arrive - draft.end
        if leave is None:
            leave = t
        if leave < t - 1.0:
            raise ItineraryError(
                f"{label}: must leave at {_iso(leave)} (to arrive on time) but the subject is "
                f"busy until {_iso(t)}"
            )
        stay_until(leave)
        leg = _shift(draft, t)
        episodes.append(leg)
        t = leg.end
        here = target
        if isinstance(stop.target, Place):
            place, sky = stop.target.name, stop.target.sky
            indoor_acc = stop.target.indoor_acc_m
        else:
            place, sky, indoor_acc = None, leg_sky, None
    stay_until(max(end, t + 1.0))
    return Trajectory(episodes)


def _shift(leg: Leg, start: float) -> Leg:
    times = tuple(start + value for value in leg.times)
    return Leg(
        start,
        times[-1],
        times,
        leg.points,
        leg.speeds,
        leg.headings,
        leg.mode,
        leg.sky,
        leg.destination,
    )


@dataclass(frozen=True)
class Routine:
    """A generated life: working days (home → work → maybe shops → home before `home_by`)
    and days off (a morning errand), every night at home."""

    home: Place
    work: Place | None = None
    shops: tuple[Place, ...] = ()
    leave: time = time(7, 30)
    work_until: time = time(17, 0)
    home_by: time = time(18, 30)
    shop_chance: float = 0.5
    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0


def travel_mode(a: LonLat, b: LonLat) -> Mode:
    return Mode.FOOT if distance_m(a, b) < WALKABLE_M else Mode.CAR


def travel_bound_s(a: LonLat, b: LonLat) -> float:
    """An upper bound of a street trip's duration, so a routine can promise `home_by`."""
    mode = travel_mode(a, b)
    length = distance_m(a, b)
    slowest = SPEED_MPS[mode][0] * 0.95
    waits = 40.0 * (2.0 * length / BLOCK_M[Mode.CAR][0] + 2.0) if mode is Mode.CAR else 0.0
    return 1.45 * length / slowest + waits + 60.0


def routine_stops(
    routine: Routine, start: datetime, end: datetime, rng: random.Random
) -> list[Stop]:
    """Stops for every local day of [start, end] in `start`'s time zone, from a seeded draw."""
    tz = start.tzinfo
    home = routine.home
    stops: list[Stop] = [StayStop(home)]
    cursor = start.timestamp()
    day = start.date()
    while datetime.combine(day, time(0), tzinfo=tz) < end:
        midnight = datetime.combine(day, time(0), tzinfo=tz)

        def at(clock_time: time, jitter_min: float, midnight: datetime = midnight) -> float:
            moment = midnight.replace(hour=clock_time.hour, minute=clock_time.minute)
            return moment.timestamp() + rng.gauss(0.0, jitter_min) * 60.0

        home_by = datetime.combine(day, routine.home_by, tzinfo=tz).timestamp()
        if routine.work is not None and day.weekday() in routine.workdays:
            leave = at(routine.leave, 10.0)
            work_until = at(routine.work_until, 15.0)
            to_work = travel_bound_s(home.point, routine.work.point)
            back = travel_bound_s(routine.work.point, home.point)
            work_until = min(work_until, home_by - back - 600.0)
            if leave > cursor and work_until > leave + to_work + 1800.0:
                stops.append(
                    GoStop(routine.work, travel_mode(home.point, routine.work.point), leave=leave)
                )
                stops.append(StayStop(routine.work, until=work_until))
                last = routine.work
                if routine.shops and rng.random() < routine.shop_chance:
                    shop = rng.choice(routine.shops)
                    dwell = rng.uniform(15.0, 35.0) * 60.0
                    finish = (
                        work_until
                        + travel_bound_s(routine.work.point, shop.point)
                        + dwell
                        + travel_bound_s(shop.point, home.point)
                    )
                    if finish < home_by:
                        stops.append(GoStop(shop, travel_mode(routine.work.point, shop.point)))
                        stops.append(StayStop(shop, duration_s=dwell))
                        last = shop
                stops.append(GoStop(home, travel_mode(last.point, home.point)))
                stops.append(StayStop(home))
                cursor = home_by
        elif routine.shops:
            leave = at(time(10, 0), 45.0)
            shop = rng.choice(routine.shops)
            dwell = rng.uniform(30.0, 90.0) * 60.0
            if leave > cursor:
                stops.append(GoStop(shop, travel_mode(home.point, shop.point), leave=leave))
                stops.append(StayStop(shop, duration_s=dwell))
                stops.append(GoStop(home, travel_mode(shop.point, home.point)))
                stops.append(StayStop(home))
                cursor = leave + dwell + 2 * travel_bound_s(home.point, shop.point)
        day += timedelta(days=1)
    return stops
