"""Building a run's timeline: every device's publications and link changes, merged and time
ordered, reproducible from the scenario's seed, with fresh ids from the caller's run id.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from tagwatch.simulators.devices import (
    DeviceKind,
    DeviceSpec,
    Incident,
    home_beacon_id,
    simulate_device,
)
from tagwatch.simulators.movement import (
    GoStop,
    ItineraryError,
    Place,
    Routine,
    StayStop,
    Stop,
    Trajectory,
    build_trajectory,
    routine_stops,
)
from tagwatch.simulators.noise import Sky
from tagwatch.simulators.noise_models import DEFAULT_NOISE_MODEL
from tagwatch.simulators.scenario_format import (
    PHONE_EXPECTED_INTERVAL_S,
    RUN_PATTERN,
    AtDecl,
    Clock,
    IncidentDecl,
    Scenario,
    ScenarioError,
    StayDecl,
    StopDecl,
    SubjectDecl,
    TimeSpec,
)
from tagwatch.simulators.scenario_plan import (
    AssignmentPlan,
    DevicePlan,
    ProvisioningPlan,
    RegionChange,
    RegionPlan,
    ScenarioRun,
    SubjectPlan,
    ZonePlan,
    resolve_rules,
)
from tagwatch.simulators.wire import LinkChange, Publication, tag_will


def derive_seed(seed: int, *parts: str) -> int:
    """A stable sub-seed per subject and device (never Python's salted `hash`), so adding a
    device to a scenario does not change the other devices' noise."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _stops(
    subject: SubjectDecl, where: str, scenario: Scenario, clock: Clock, end: float
) -> tuple[list[Stop], list[str]]:
    places: Mapping[str, Place] = scenario.places
    if subject.routine is not None:
        r = subject.routine
        routine = Routine(
            home=places[r.home],
            work=None if r.work is None else places[r.work],
            shops=tuple(places[s] for s in r.shops),
            leave=r.leave.time_of_day(),
            work_until=r.work_until.time_of_day(),
            home_by=r.home_by.time_of_day(),
            shop_chance=r.shop_chance,
        )
        rng = random.Random(derive_seed(scenario.seed, "routine", subject.key))
        start = clock.start.astimezone(ZoneInfo(subject.timezone))
        stops = routine_stops(routine, start, datetime.fromtimestamp(end, UTC), rng)
        return stops, [
            f"subjects.{subject.key}.routine (generated stop {i})" for i in range(len(stops))
        ]
    anchor = clock.start.timestamp()
    stops = []

    def resolve(spec: TimeSpec | None) -> float | None:
        nonlocal anchor
        if spec is None:
            return None
        moment = clock.resolve(spec, anchor)
        anchor = max(anchor, moment)
        return moment

    decl: StopDecl
    for decl in subject.itinerary:
        sky = None if decl.sky is None else Sky(decl.sky)
        if isinstance(decl, AtDecl):
            duration = None if decl.for_ is None else float(decl.for_)
            until = resolve(decl.until)
            stops.append(StayStop(places[decl.at], until, duration, sky, decl.indoor_acc_m))
        elif isinstance(decl, StayDecl):
            stops.append(StayStop(None, None, float(decl.stay), sky, decl.indoor_acc_m))
        else:
            target = places[decl.go] if isinstance(decl.go, str) else decl.go
            stops.append(
                GoStop(
                    target,
                    decl.by,
                    decl.via,
                    leave=resolve(decl.leave),
                    arrive=resolve(decl.arrive),
                    sky=sky,
                    speed_mps=decl.speed_mps,
                    direct=decl.direct,
                )
            )
    return stops, [f"{where}.itinerary[{i}]" for i in range(len(stops))]


def _incidents(
    decls: Sequence[IncidentDecl], where: str, clock: Clock, end: float, source: str
) -> tuple[Incident, ...]:
    out = []
    for index, decl in enumerate(decls):
        if decl.daily:
            clock_time = decl.start.time_of_day()
            occurrences = []
            for day in clock.local_days(end):
                start = datetime.combine(day, clock_time, tzinfo=clock.tz).timestamp()
                occurrences.append(start)
        else:
            occurrences = [clock.resolve(decl.start)]
        for start in occurrences:
            stop = None if decl.to is None else clock.resolve(decl.to, start)
            if stop is not None and stop <= start:
                at = f"{where}.incidents[{index}]"
                raise ScenarioError(f"{source}: {at}: `to` must be after `from`")
            out.append(
                Incident(
                    decl.type,
                    start,
                    stop,
                    acc_m=decl.acc_m,
                    jump_probability=decl.jump_probability,
                    interval_s=decl.interval_s,
                    fallback=decl.link_fallback,
                )
            )
    return tuple(sorted(out, key=lambda i: i.start))


def build_timeline(
    scenario: Scenario,
    run_id: str,
    *,
    on_date: date | None = None,
    noise_model: str = DEFAULT_NOISE_MODEL,
) -> ScenarioRun:
    """The provisioning plan and every device's publications for one run.

    `run_id` makes the ids fresh ([A-Za-z0-9]{1,8}; device ids are sim-<run>-<scenario>-<key>);
    positions, noise and times depend only on the seed. `on_date` replays the scenario starting
    on another local date at the same local time (a compressed CI run must lie in the past, as
    ingest refuses fixes from the future). `noise_model` names the devices' noise model
    (noise_models.NOISE_MODELS): the truth is the same under every model, only the fixes differ."""
    if not RUN_PATTERN.match(run_id):
        raise ScenarioError(f"run id {run_id!r} must be 1–8 letters or digits")
    clock = scenario.clock(on_date)
    start = clock.start.timestamp()
    end = start + scenario.duration_s
    prefix = f"sim-{run_id}-{scenario.name}"

    truth: dict[str, Trajectory] = {}
    for index, subject in enumerate(scenario.subjects):
        stops, names = _stops(subject, f"subjects[{index}]", scenario, clock, end)
        rng = random.Random(derive_seed(scenario.seed, "subject", subject.key))
        try:
            truth[subject.key] = build_trajectory(start, end, stops, rng, names, clock.tz)
        except ItineraryError as exc:
            raise ScenarioError(f"{scenario.source}: {exc}") from exc

    # The first home beacon a subject's tags see is the one approved for the subject.
    beacons: dict[str, str] = {}
    for decl in scenario.devices:
        if decl.home_beacon is not None:
            beacon = home_beacon_id(prefix, decl.subject, decl.home_beacon)
            beacons.setdefault(decl.subject, beacon)
    subjects = tuple(
        SubjectPlan(
            key=s.key,
            name=f"{prefix}-{s.key}",
            case_ref=f"{prefix}-{s.key}",
            display_name=s.display_name,
            region_id=s.region,
            timezone=s.timezone,
            region_changes=tuple(
                RegionChange(datetime.fromtimestamp(clock.resolve(c.at), UTC), c.region)
                for c in s.region_changes
            ),
            home_beacon=beacons.get(s.key),
        )
        for s in scenario.subjects
    )
    timezones = {s.key: s.timezone for s in scenario.subjects}

    devices: list[DevicePlan] = []
    assignments: list[AssignmentPlan] = []
    publications: list[tuple[float, int, int, Publication]] = []
    links: list[LinkChange] = []
    for index, decl in enumerate(scenario.devices):
        device_id = f"{prefix}-{decl.key}"
        topic = None
        if decl.kind is not DeviceKind.TAG:
            topic = f"owntracks/{prefix}-{decl.subject}/{decl.key}"
        spec = DeviceSpec(
            device_id=device_id,
            kind=decl.kind,
            interval_s=decl.interval_s,
            pursuit_interval_s=decl.pursuit_interval_s,
            battery=decl.battery_model,
            incidents=_incidents(decl.incidents, f"devices[{index}]", clock, end, scenario.source),
            home_beacon=decl.home_beacon,
            beacon_id=None
            if decl.home_beacon is None
            else home_beacon_id(prefix, decl.subject, decl.home_beacon),
            ts_format=decl.ts_format,
            owntracks_topic=topic,
            tid=decl.key[-2:],
            sends_acc=decl.sends_acc,
        )
        rng = random.Random(derive_seed(scenario.seed, "device", decl.key))
        timeline = simulate_device(spec, truth[decl.subject], start, end, rng, noise_model)
        publications.extend((p.at, index, n, p) for n, p in enumerate(timeline.publications))
        links.extend(timeline.links)
        expected = int(decl.interval_s) if spec.is_tag else PHONE_EXPECTED_INTERVAL_S
        devices.append(
            DevicePlan(
                key=decl.key,
                device_id=device_id,
                kind=decl.kind.value,
                subject_key=decl.subject,
                role=decl.assigned_role,
                owntracks_topic=topic,
                expected_interval_s=expected,
                last_will=tag_will(device_id) if spec.is_tag else spec.will(start),
            )
        )
        # An hour before the start unless the file says, so the first fixes are never orphans.
        assigned_from = (
            start - 3600.0 if decl.assigned_from is None else clock.resolve(decl.assigned_from)
        )
        assigned_until = None if decl.assigned_until is None else clock.resolve(decl.assigned_until)
        if assigned_until is not None and assigned_until <= assigned_from:
            message = f"devices[{index}].assigned_until: not after `assigned_from`"
            raise ScenarioError(f"{scenario.source}: {message}")
        assignments.append(
            AssignmentPlan(
                device_id,
                decl.subject,
                decl.assigned_role,
                datetime.fromtimestamp(assigned_from, UTC),
                None if assigned_until is None else datetime.fromtimestamp(assigned_until, UTC),
            )
        )

    zones = tuple(
        ZonePlan(
            key=z.key,
            name=f"{prefix}-{z.key}",
            kind=z.kind,
            geometry=z.geojson(scenario.places),
            radius_m=z.radius,
            buffer_m=z.buffer_m,
            subject_key=z.subject,
            victim_subject_key=z.victim,
            region_id=z.region,
            schedule=None if z.schedule is None else z.schedule.shifted(clock.day_shift),
            timezone=timezones.get(z.subject or "", scenario.timezone),
        )
        for z in scenario.zones
    )
    expectations, forbidden, allowed = resolve_rules(scenario, clock)
    publications.sort(key=lambda item: item[:3])
    return ScenarioRun(
        scenario=scenario.name,
        run_id=run_id,
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
        plan=ProvisioningPlan(
            regions=tuple(RegionPlan(r.id, r.name) for r in scenario.regions),
            subjects=subjects,
            devices=tuple(devices),
            assignments=tuple(assignments),
            zones=zones,
        ),
        publications=tuple(p for *_, p in publications),
        links=tuple(sorted(links, key=lambda link: link.at)),
        expectations=tuple(expectations),
        forbidden=tuple(forbidden),
        allowed=tuple(allowed),
        truth=truth,
    )
