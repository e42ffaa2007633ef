"""A compliant population: ordinary weeks of many subjects, as scenario declarations.

Issue 14 asks for zero false alerts where the field gets the most (curfews in small homes,
drift indoors at night, signal loss), shown on a population nobody tuned the rules on. The
scenario library holds a dozen hand-written stories; this module writes a thousand lives from a
seed: home at night under a curfew, work (day or night shifts), shops, visits; homes of the
sizes supervisors draw (plots and flats 15-60 m across, the curfew zone is that outline);
places spread over a town; exclusion zones the subject never goes near, and for some an
inclusion zone (the city) they never leave. Nobody violates anything, so every alert the
platform raises on these traces is false by construction.

Each subject is written the way a scenario file would say it (a raw table, read by
`scenario.parse_scenario`, so the format's checks hold here too) and laid out by the same plan,
trajectory, device and noise code as the library (`scenario_timeline.build_timeline`): there is
no second device or noise simulator. Subjects are grouped into cohorts (one scenario each, one
town, one time zone) so a benchmark can replay a cohort at a time with bounded memory and say
how far it is.

Why the choices:

* Towns: Cape Town (no DST), Leeds (Europe/London leaves summer time on Sunday 25 October 2026,
  inside the week that starts Monday 19 October: a curfew night is an hour longer) and Chicago
  (a negative UTC offset), so schedules are exercised in several zones.
* Curfews: 21:00-06:00, 22:00-07:00 or 20:00-06:00 for day workers and the unemployed;
  night-shift workers (22:00-06:00) get a curfew that fits them (09:00-16:00, home asleep), as
  a court would order.
* Trips keep `MARGIN_S` away from curfew windows on the true (not only planned) timeline: every
  outing's return is planned with `movement.travel_bound_s`, an upper bound of the street trip.
* Exclusion zones keep `CLEARANCE_M` (beyond their radius and warning band) from every place
  the subject goes to and from the disc spanned by any trip between two of them (a street-grid
  path between a and b never leaves the circle on ab: Thales), so no route, nor the
  100-500 m multipath jumps of the noise model, comes near them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tagwatch.simulators.geo import LonLat, distance_m, offset
from tagwatch.simulators.movement import travel_bound_s, travel_mode
from tagwatch.simulators.scenario import Scenario, derive_seed, parse_scenario
from tagwatch.simulators.schedule import DAY_SETS, Schedule, Window

START = date(2026, 10, 19)  # a Monday; Europe/London leaves summer time on Sunday 25th
COHORT_SIZE = 25
HOME_MIN_M, HOME_MAX_M = 15.0, 60.0  # plot or flat outline, each side
TOWN_RADIUS_M = 5000.0  # homes lie within this of the centre
MARGIN_S = 1800.0  # outings end (upper bound) at least this long before a curfew starts
CLEARANCE_M = 1500.0  # exclusion zone (with band) to any place or trip disc
INCLUSION_RADIUS_M = 25_000.0
STEP_S = 300.0  # how finely an outing is checked against the curfew

DEVICE_CLASSES = ("tag+beacon", "tag", "phone")
DEVICE_SHARES = (0.4, 0.45, 0.15)
SHIFTS = ("day", "night", "none")
SHIFT_SHARES = (0.7, 0.12, 0.18)
DAY_CURFEWS = (("21:00", "06:00"), ("22:00", "07:00"), ("20:00", "06:00"))
NIGHT_CURFEW = ("09:00", "16:00")
INCLUSION_SHARE = 0.4
SCHOOL_SHARE = 0.3


@dataclass(frozen=True)
class Town:
    key: str
    name: str
    region: str
    timezone: str
    lon: float
    lat: float


TOWNS = (
    Town("cpt", "Cape Town", "za-wc-cpt", "Africa/Johannesburg", 18.4800, -33.9500),
    Town("lds", "Leeds", "gb-wyk-lds", "Europe/London", -1.5490, 53.8000),
    Town("chi", "Chicago", "us-il-chi", "America/Chicago", -87.6800, 41.8800),
)


@dataclass(frozen=True)
class Member:
    """What the population says about one subject beside the scenario: for breakdowns and for
    the tests that check the population tells the truth."""

    index: int
    key: str  # subject key in its cohort's scenario
    town: str
    device: str  # one of DEVICE_CLASSES
    shift: str  # one of SHIFTS
    plot_m: tuple[float, float]  # the home outline (curfew zone), metres
    curfew: tuple[str, str]


@dataclass(frozen=True)
class Cohort:
    """Subjects of one town as one scenario (their own zones, devices and itineraries)."""

    scenario: Scenario
    members: tuple[Member, ...]


def population(
    subjects: int, days: float, seed: int = 1, cohort_size: int = COHORT_SIZE
) -> Iterator[Cohort]:
    """`subjects` compliant subjects over `days` days, cohort by cohort (lazily: a benchmark
    holds one cohort's traces at a time). Subject i's life depends only on (seed, i), not on
    the cohort size."""
    if subjects < 1 or days <= 0:
        raise ValueError("a population needs at least one subject and a positive duration")
    by_town: dict[str, list[int]] = {t.key: [] for t in TOWNS}
    for index in range(subjects):
        by_town[TOWNS[index % len(TOWNS)].key].append(index)
    for town in TOWNS:
        indices = by_town[town.key]
        for chunk in range(0, len(indices), cohort_size):
            part = indices[chunk : chunk + cohort_size]
            yield _cohort(town, part, days, seed, chunk // cohort_size)


def _cohort(town: Town, indices: Sequence[int], days: float, seed: int, number: int) -> Cohort:
    tz = ZoneInfo(town.timezone)
    start = datetime.combine(START, time(0), tzinfo=tz)
    end = start.timestamp() + days * 86400.0
    raw: dict[str, Any] = {
        "name": f"pop-{town.key}-{number:03d}",
        "title": f"Compliant population, {town.name}, cohort {number}",
        "description": "Ordinary compliant lives (simulators/population.py): every alert is false.",
        "seed": seed,
        "start": start.isoformat(),
        "duration": days * 86400.0,
        "timezone": town.timezone,
        "regions": [{"id": town.region, "name": town.name}],
        "places": {},
        "subjects": [],
        "devices": [],
        "zones": [],
        "forbid": [{"alerts": "*", "why": "a compliant population: nobody violates anything"}],
    }
    members = []
    for index in indices:
        rng = random.Random(derive_seed(seed, "population", str(index)))
        members.append(_member(raw, town, index, rng, start.timestamp(), end))
    return Cohort(parse_scenario(raw, f"<population {raw['name']}>"), tuple(members))


def _pick(rng: random.Random, choices: Sequence[str], shares: Sequence[float]) -> str:
    return rng.choices(list(choices), weights=list(shares))[0]


def _around(rng: random.Random, centre: LonLat, low_m: float, high_m: float) -> LonLat:
    """A point `low_m`-`high_m` from `centre` in a random direction (area-uniform)."""
    r = math.sqrt(rng.uniform(low_m**2, high_m**2))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return offset(centre[0], centre[1], r * math.sin(angle), r * math.cos(angle))


def plot_ring(centre: LonLat, width_m: float, depth_m: float, angle_deg: float) -> list[LonLat]:
    """A home's outline as a supervisor draws it: a rectangle turned to the street, closed."""
    a = math.radians(angle_deg)
    corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5)]
    ring = []
    for u, v in corners:
        x, y = u * width_m, v * depth_m
        east, north = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
        ring.append(offset(centre[0], centre[1], east, north))
    return ring


def circle_ring(centre: LonLat, radius_m: float, corners: int = 24) -> list[LonLat]:
    ring = [
        offset(
            centre[0],
            centre[1],
            radius_m * math.sin(2 * math.pi * k / corners),
            radius_m * math.cos(2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]
    return [*ring, ring[0]]


def _member(
    raw: dict[str, Any], town: Town, index: int, rng: random.Random, start: float, end: float
) -> Member:
    key = f"p{index:05d}"
    device = _pick(rng, DEVICE_CLASSES, DEVICE_SHARES)
    shift = _pick(rng, SHIFTS, SHIFT_SHARES)
    curfew = NIGHT_CURFEW if shift == "night" else rng.choice(DAY_CURFEWS)
    places: dict[str, LonLat] = {}

    # home: a plot (house) or a flat's outline; the tag's wearer is somewhere inside it
    centre = (town.lon, town.lat)
    plot_centre = _around(rng, centre, 0.0, TOWN_RADIUS_M)
    flat = rng.random() < 0.4
    side = (HOME_MIN_M, 25.0) if flat else (20.0, HOME_MAX_M)
    plot = (round(rng.uniform(*side), 1), round(rng.uniform(*side), 1))
    angle = rng.uniform(0.0, 90.0)
    a = math.radians(angle)
    u, v = rng.uniform(-0.2, 0.2) * plot[0], rng.uniform(-0.2, 0.2) * plot[1]
    places["home"] = offset(
        plot_centre[0],
        plot_centre[1],
        u * math.cos(a) - v * math.sin(a),
        u * math.sin(a) + v * math.cos(a),
    )
    home = places["home"]
    if shift != "none":
        places["work"] = _around(rng, home, 1000.0, 8000.0)
    for n in range(rng.randint(1, 3)):
        places[f"shop{n}"] = _around(rng, home, 300.0, 3000.0)
    places["visit"] = _around(rng, home, 500.0, 5000.0)

    names = {name: f"{key}-{name}" for name in places}
    sky = {"home": "indoor", "visit": "indoor"}
    if "work" in places:
        sky["work"] = rng.choices(["indoor", "urban", "open"], weights=[0.7, 0.15, 0.15])[0]
    for name, (lon, lat) in places.items():
        raw["places"][names[name]] = {"lon": lon, "lat": lat, "sky": sky.get(name, "indoor")}

    schedule = curfew_schedule(curfew)
    tz = ZoneInfo(town.timezone)
    itinerary = _itinerary(rng, places, names, shift, schedule, tz, start, end)
    raw["subjects"].append(
        {
            "key": key,
            "name": f"Subject {index} ({town.name}, {shift} shift, {device})",
            "region": town.region,
            "timezone": town.timezone,
            "itinerary": itinerary,
        }
    )

    entry: dict[str, Any] = {"key": f"{key}-dev", "subject": key}
    if device == "phone":
        entry |= {"kind": "phone", "incidents": [_charge("23:00", "01:00")]}
    else:
        entry |= {"kind": "tag", "incidents": [_charge("19:30", "21:30")]}
        if device == "tag+beacon":
            entry["home_beacon"] = names["home"]
    raw["devices"].append(entry)

    ring = plot_ring(plot_centre, plot[0], plot[1], angle)
    raw["zones"].append(
        {
            "key": f"{key}-curfew",
            "name": f"{key} home (curfew)",
            "kind": "curfew",
            "subject": key,
            "polygon": [list(p) for p in ring[:-1]],
            "windows": [{"days": "daily", "start": curfew[0], "end": curfew[1]}],
        }
    )
    spots = list(places.values())
    radius = rng.uniform(200.0, 600.0)
    buffer = rng.uniform(100.0, 300.0)
    victim = far_point(rng, spots, radius + buffer, home)
    raw["zones"].append(
        {
            "key": f"{key}-victim",
            "name": f"{key} victim's neighbourhood (exclusion)",
            "kind": "exclusion",
            "subject": key,
            "point": list(victim),
            "radius_m": round(radius, 1),
            "buffer_m": round(buffer, 1),
        }
    )
    if rng.random() < SCHOOL_SHARE:
        school = far_point(rng, spots, 75.0 + 50.0, home)
        raw["zones"].append(
            {
                "key": f"{key}-school",
                "name": f"{key} school (exclusion)",
                "kind": "exclusion",
                "subject": key,
                "polygon": [list(p) for p in plot_ring(school, 120.0, 80.0, 0.0)[:-1]],
                "buffer_m": 50.0,
            }
        )
    if rng.random() < INCLUSION_SHARE:
        raw["zones"].append(
            {
                "key": f"{key}-city",
                "name": f"{town.name} (inclusion)",
                "kind": "inclusion",
                "subject": key,
                "polygon": [list(p) for p in circle_ring(centre, INCLUSION_RADIUS_M)[:-1]],
            }
        )
    return Member(index, key, town.key, device, shift, plot, curfew)


def _charge(start: str, end: str) -> dict[str, Any]:
    """A compliant wearer charges every evening (a tag lasts a day or two, FIELD.md)."""
    return {"type": "charge", "from": start, "to": end, "daily": True}


def curfew_schedule(curfew: tuple[str, str]) -> Schedule:
    start, end = (time.fromisoformat(t) for t in curfew)
    return Schedule((Window(DAY_SETS["daily"], start, end),))


def trip_discs(spots: Sequence[LonLat]) -> list[tuple[LonLat, float]]:
    """Every place (radius 0) and, for every pair, the disc a street path between them stays
    in: centred on the midpoint, radius half the distance."""
    discs: list[tuple[LonLat, float]] = [(p, 0.0) for p in spots]
    for i, a in enumerate(spots):
        for b in spots[i + 1 :]:
            mid = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)
            discs.append((mid, distance_m(a, b) / 2.0 + 1.0))
    return discs


def clearance_m(point: LonLat, spots: Sequence[LonLat]) -> float:
    """How far `point` is from every place and trip disc of a subject (negative: inside)."""
    return min(distance_m(point, c) - r for c, r in trip_discs(spots))


def far_point(rng: random.Random, spots: Sequence[LonLat], reach_m: float, home: LonLat) -> LonLat:
    """A zone centre, 2-12 km from home, whose `reach_m` (radius and band) keeps `CLEARANCE_M`
    from everywhere the subject goes; further out if the town offers no such spot."""
    discs = trip_discs(spots)
    need = reach_m + CLEARANCE_M
    for low, high in ((2000.0, 12_000.0), (12_000.0, 30_000.0)):
        for _ in range(200):
            point = _around(rng, home, low, high)
            if all(distance_m(point, c) - r >= need for c, r in discs):
                return point
    raise RuntimeError("no exclusion spot clear of the subject's trips")  # pragma: no cover


# -- itineraries ------------------------------------------------------------------------------

Legs = list[tuple[str, float]]  # (place, dwell seconds), ending with ("home", 0)


def _itinerary(
    rng: random.Random,
    places: dict[str, LonLat],
    names: dict[str, str],
    shift: str,
    schedule: Schedule,
    tz: ZoneInfo,
    start: float,
    end: float,
) -> list[dict[str, Any]]:
    """Home first; then outings (home -> places -> home), each kept clear of the curfew by
    `MARGIN_S` on its upper-bound timeline (errands dropped, work cut short, or the outing
    left out if nothing else fits)."""
    stops: list[dict[str, Any]] = [{"at": names["home"]}]
    free_from = start + 600.0
    shops = sorted(p for p in places if p.startswith("shop"))
    workdays = {0, 1, 2, 3, 4} if rng.random() < 0.8 else {1, 2, 3, 4, 5}
    curfew_end = next(w.end for w in schedule.windows)
    day = datetime.fromtimestamp(start, tz).date()
    last = datetime.fromtimestamp(end, tz).date()
    while day <= last:
        workday = day.weekday() in workdays
        for leave, legs in _outings(rng, day, shift, workday, shops, tz, curfew_end):
            fitted = _fit(places, schedule, tz, leave, legs)
            if fitted is None:
                continue
            departures, back = fitted
            if leave < free_from or back > end - 600.0:
                continue
            here = "home"
            for place, depart in departures:
                mode = travel_mode(places[here], places[place]).value
                stops.append({"go": names[place], "by": mode, "leave": _iso(depart, tz)})
                stops.append({"at": names[place]})
                here = place
            free_from = back + 1200.0
        day += timedelta(days=1)
    return stops


def _outings(
    rng: random.Random,
    day: date,
    shift: str,
    workday: bool,
    shops: list[str],
    tz: ZoneInfo,
    curfew_end: time,
) -> list[tuple[float, Legs]]:
    """The day's outings: (leave home at, [(place, dwell s), ..., ("home", 0)])."""

    def at(hour: float, jitter_min: float = 0.0) -> float:
        minutes = min(round(hour * 60.0), 24 * 60 - 1)
        clock = time(minutes // 60, minutes % 60)  # local wall time, so DST days keep it
        wall = datetime.combine(day, clock, tzinfo=tz)
        return wall.timestamp() + rng.gauss(0.0, jitter_min) * 60.0

    out: list[tuple[float, Legs]] = []
    if shift == "night":
        if rng.random() < 0.5:
            errand = (rng.choice(shops), rng.uniform(900.0, 2400.0))
            out.append((at(16.75, 10.0), [errand, ("home", 0.0)]))
        if workday:
            shift_s = 8 * 3600.0 + rng.uniform(-600.0, 900.0)
            out.append((at(21.1, 5.0), [("work", shift_s), ("home", 0.0)]))
        elif rng.random() < 0.6:
            out.append(
                (at(18.5, 30.0), [("visit", rng.uniform(3600.0, 4 * 3600.0)), ("home", 0.0)])
            )
        return out
    if shift == "day" and workday:
        legs: Legs = [("work", rng.uniform(8.0, 9.5) * 3600.0)]
        if rng.random() < 0.5:
            legs.append((rng.choice(shops), rng.uniform(900.0, 2400.0)))
        if rng.random() < 0.2:
            legs.append(("visit", rng.uniform(2700.0, 7200.0)))
        leave = curfew_end.hour + curfew_end.minute / 60.0 + rng.uniform(0.4, 1.6)
        out.append((at(leave), [*legs, ("home", 0.0)]))
        return out
    if rng.random() < 0.85:
        errand = (rng.choice(shops), rng.uniform(1200.0, 3600.0))
        out.append((at(10.5, 40.0), [errand, ("home", 0.0)]))
    if rng.random() < 0.45:
        out.append((at(15.0, 40.0), [("visit", rng.uniform(3600.0, 3 * 3600.0)), ("home", 0.0)]))
    return out


def _plan(
    places: dict[str, LonLat], leave: float, legs: Legs
) -> tuple[list[tuple[str, float]], float]:
    """Each leg's (destination, departure) on the upper-bound timeline, and when the subject
    is home again at the latest."""
    departures = []
    here, t = "home", leave
    for place, dwell in legs:
        departures.append((place, t))
        t += travel_bound_s(places[here], places[place]) + dwell
        here = place
    return departures, t


def _fit(
    places: dict[str, LonLat], schedule: Schedule, tz: ZoneInfo, leave: float, legs: Legs
) -> tuple[list[tuple[str, float]], float] | None:
    """The outing, cut until it keeps clear of the curfew: the last errand goes first, then
    the first stop (work) ends half an hour earlier at a time; None if it cannot."""
    legs = list(legs)
    while legs[0][1] >= 1800.0:
        departures, back = _plan(places, leave, legs)
        if not _meets_curfew(schedule, tz, leave - MARGIN_S / 3.0, back + MARGIN_S):
            return departures, back
        if len(legs) > 2:
            legs.pop(-2)
        else:
            legs[0] = (legs[0][0], legs[0][1] - 1800.0)
    return None


def _meets_curfew(schedule: Schedule, tz: ZoneInfo, low: float, high: float) -> bool:
    """Whether the curfew is on at any time in [low, high] (checked every `STEP_S`; windows
    last hours, so nothing fits between two checks)."""
    t = low
    while t < high:
        if schedule.is_active(datetime.fromtimestamp(t, tz), tz):
            return True
        t += STEP_S
    return schedule.is_active(datetime.fromtimestamp(high, tz), tz)


def _iso(t: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(round(t), tz).isoformat()
