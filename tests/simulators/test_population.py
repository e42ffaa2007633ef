"""The compliant population tells the truth: homes of the sizes supervisors draw, every night
inside the curfew zone, no trip near an exclusion zone or out of an inclusion zone, and the same
lives from the same seed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from shapely.geometry import Point, shape

from tagwatch.simulators.geo import distance_m
from tagwatch.simulators.population import (
    HOME_MAX_M,
    HOME_MIN_M,
    TOWNS,
    Cohort,
    population,
)
from tagwatch.simulators.scenario import ScenarioRun, build_timeline
from tagwatch.store.zones import ZoneDraft, zone_problems

SUBJECTS, DAYS = 9, 7.0  # three per town, a week (Leeds's DST change included)


@pytest.fixture(scope="module")
def week() -> list[tuple[Cohort, ScenarioRun]]:
    return [(c, build_timeline(c.scenario, "t1")) for c in population(SUBJECTS, DAYS, seed=5)]


def test_the_same_seed_gives_the_same_lives_and_another_seed_others():
    first = [c.scenario for c in population(6, 2, seed=11)]
    again = [c.scenario for c in population(6, 2, seed=11)]
    other = [c.scenario for c in population(6, 2, seed=12)]
    assert first == again
    assert first != other
    a = build_timeline(first[0], "x")
    b = build_timeline(again[0], "x")
    assert [p.payload for p in a.publications] == [p.payload for p in b.publications]


def test_a_subject_does_not_depend_on_the_cohort_size():
    def zones(cohort_size: int) -> dict[str, object]:
        return {
            z.key: z
            for c in population(8, 1, seed=2, cohort_size=cohort_size)
            for z in c.scenario.zones
        }

    assert zones(1) == zones(25)


def test_towns_cohorts_and_the_dst_week():
    cohorts = list(population(12, 7, seed=1, cohort_size=2))
    assert {c.scenario.timezone for c in cohorts} == {t.timezone for t in TOWNS}
    assert sum(len(c.members) for c in cohorts) == 12
    assert all(len(c.members) <= 2 for c in cohorts)
    london = ZoneInfo("Europe/London")
    leeds = next(c for c in cohorts if c.scenario.timezone == "Europe/London").scenario
    start = leeds.clock().start
    end = datetime.fromtimestamp(start.timestamp() + leeds.duration_s, UTC)
    assert start.astimezone(london).utcoffset() != end.astimezone(london).utcoffset()


def test_homes_are_plots_and_flats_of_15_to_60_m_and_the_curfew_zone_contains_the_home():
    for cohort in population(60, 1, seed=3):
        places = cohort.scenario.places
        for member in cohort.members:
            assert all(HOME_MIN_M <= side <= HOME_MAX_M for side in member.plot_m)
            zone = next(z for z in cohort.scenario.zones if z.key == f"{member.key}-curfew")
            ring = zone.geojson(places)["coordinates"][0]  # type: ignore[index]
            sides = [distance_m(a, b) for a, b in itertools.pairwise(ring)]
            assert all(HOME_MIN_M - 0.5 <= s <= HOME_MAX_M + 0.5 for s in sides), sides
            home = places[f"{member.key}-home"]
            assert shape(zone.geojson(places)).contains(Point(home.lon, home.lat))
    shifts = {m.shift for c in population(60, 1, seed=3) for m in c.members}
    devices = {m.device for c in population(60, 1, seed=3) for m in c.members}
    assert shifts == {"day", "night", "none"}
    assert devices == {"tag+beacon", "tag", "phone"}


def test_nobody_is_scripted_out_at_curfew_near_an_exclusion_or_out_of_the_city(week):
    for cohort, run in week:
        places = cohort.scenario.places
        zones = {z.key: z for z in run.plan.zones}
        for member in cohort.members:
            truth = run.truth[member.key]
            curfew = zones[f"{member.key}-curfew"]
            assert curfew.schedule is not None
            home = shape(curfew.geometry)
            tz = ZoneInfo(curfew.timezone)
            keep_out = [z for z in zones.values() if z.subject_key == member.key]
            outings = 0
            t = run.start.timestamp()
            was_home = True
            while t < run.end.timestamp():
                here = truth.at(t)
                at_home = home.contains(Point(here.lon, here.lat))
                outings += was_home and not at_home
                was_home = at_home
                if curfew.schedule.is_active(datetime.fromtimestamp(t, UTC), tz):
                    assert at_home, (member, datetime.fromtimestamp(t, tz))
                for zone in keep_out:
                    if zone.kind == "exclusion":
                        reach = zone.radius_m or 75.0  # the school box's half diagonal
                        centre = shape(zone.geometry).centroid
                        gap = distance_m((here.lon, here.lat), (centre.x, centre.y)) - reach
                        assert gap > zone.buffer_m + 1000.0, (member, zone.key, gap)
                    elif zone.kind == "inclusion":
                        assert shape(zone.geometry).contains(Point(here.lon, here.lat))
                t += 60.0
            assert outings >= 2, member  # a week has work, errands or visits
            assert places[f"{member.key}-home"]


def test_the_platform_accepts_every_zone_as_drawn(week):
    for _, run in week:
        for number, zone in enumerate(run.plan.zones, start=1):
            draft = ZoneDraft(
                name=zone.name,
                kind=zone.kind,
                geometry=zone.geometry,
                radius_m=zone.radius_m,
                buffer_m=zone.buffer_m or None,
                subject_id=number,
                schedule=zone.schedule_json(),
            )
            assert zone_problems(draft) == [], zone
