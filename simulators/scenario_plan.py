"""The resolved plan of a scenario run: what the runner provisions (regions, subjects, devices,
assignments, zones as GeoJSON) and what the run is scored against (expectations, forbidden
and allowed alerts with their windows resolved to UTC instants).

Split from the format so that the scorer and the runner depend on the plan's shape, not on how
a TOML file is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tagwatch.simulators.movement import Trajectory
from tagwatch.simulators.scenario_format import (
    Clock,
    Scenario,
    ScenarioError,
    TimeSpec,
)
from tagwatch.simulators.schedule import Schedule
from tagwatch.simulators.wire import LinkAction, LinkChange, Publication, Will

# -- the run: what the runner provisions and publishes --------------------------------------


@dataclass(frozen=True)
class RegionPlan:
    id: str
    name: str


@dataclass(frozen=True)
class RegionChange:
    at: datetime
    region_id: str


@dataclass(frozen=True)
class SubjectPlan:
    key: str  # the scenario's name for the subject; expectations use it
    name: str  # fresh per run: sim-<run>-<scenario>-<key>
    case_ref: str
    display_name: str
    region_id: str
    timezone: str
    region_changes: tuple[RegionChange, ...] = ()
    # The home beacon a supervisor approved for the subject (its tag's `home_beacon`), if any.
    home_beacon: str | None = None


@dataclass(frozen=True)
class DevicePlan:
    key: str
    device_id: str  # fresh per run; also the MQTT client id and username
    kind: str  # tag, phone, victim_phone
    subject_key: str
    role: str
    owntracks_topic: str | None
    expected_interval_s: int
    last_will: Will  # phones: the will's `tst` is set per connection (see LinkChange.will)


@dataclass(frozen=True)
class AssignmentPlan:
    device_id: str
    subject_key: str
    role: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class ZonePlan:
    key: str
    name: str
    kind: str
    geometry: dict[str, Any] | None  # GeoJSON, lon-lat; None for a victim zone (it moves)
    radius_m: float | None
    buffer_m: float
    subject_key: str | None  # None: a global zone
    victim_subject_key: str | None
    region_id: str | None
    schedule: Schedule | None
    timezone: str  # the owner subject's zone, in which the schedule is evaluated

    def schedule_json(self) -> dict[str, Any] | None:
        return None if self.schedule is None else self.schedule.to_json()


@dataclass(frozen=True)
class ProvisioningPlan:
    regions: tuple[RegionPlan, ...]
    subjects: tuple[SubjectPlan, ...]
    devices: tuple[DevicePlan, ...]
    assignments: tuple[AssignmentPlan, ...]
    zones: tuple[ZonePlan, ...]


@dataclass(frozen=True)
class Expectation:
    alert: str
    subject: str  # subject key
    after: datetime
    before: datetime
    late: bool | None = None
    within_s: float | None = None
    why: str = ""


@dataclass(frozen=True)
class AlertRule:
    """A `[[forbid]]` or `[[allow]]` entry with its window resolved."""

    alerts: frozenset[str] | None
    subject: str | None
    after: datetime
    before: datetime
    why: str = ""

    def covers(self, alert: str, subject: str | None, at: datetime) -> bool:
        return (
            (self.alerts is None or alert in self.alerts)
            and (self.subject is None or subject == self.subject)
            and self.after <= at <= self.before
        )


@dataclass(frozen=True)
class ScenarioRun:
    scenario: str
    run_id: str
    start: datetime
    end: datetime
    plan: ProvisioningPlan
    publications: tuple[Publication, ...]
    links: tuple[LinkChange, ...]
    expectations: tuple[Expectation, ...]
    forbidden: tuple[AlertRule, ...]
    allowed: tuple[AlertRule, ...]
    truth: Mapping[str, Trajectory] = field(default_factory=dict)

    def steps(self) -> list[Publication | LinkChange]:
        """Connects, publications and drops in the order a player performs them."""

        def order(step: Publication | LinkChange) -> tuple[float, int]:
            if isinstance(step, Publication):
                return (step.at, 1)
            return (step.at, 0 if step.action is LinkAction.CONNECT else 2)

        return sorted([*self.links, *self.publications], key=order)

    def subject_key(self, ref: str | int) -> str | None:
        """The scenario key of a subject named by key, fresh name or case reference."""
        text = str(ref)
        for subject in self.plan.subjects:
            if text in (subject.key, subject.name, subject.case_ref):
                return subject.key
        return None


# -- alert windows --------------------------------------------------------------------------


def check_rules(scenario: Scenario) -> None:
    """Windows must be ordered, inside the scenario, and no expectation may be forbidden."""
    clock = scenario.clock()
    expectations, forbidden, _ = resolve_rules(scenario, clock)
    for index, e in enumerate(expectations):
        for rule in forbidden:
            overlaps = rule.after <= e.before and e.after <= rule.before
            if (
                overlaps
                and (rule.alerts is None or e.alert in rule.alerts)
                and (rule.subject in (None, e.subject))
            ):
                raise ScenarioError(
                    f"{scenario.source}: expect[{index}]: {e.alert} for {e.subject} is both "
                    "expected and forbidden in an overlapping window"
                )


def resolve_rules(
    scenario: Scenario, clock: Clock
) -> tuple[list[Expectation], list[AlertRule], list[AlertRule]]:
    start = clock.start.timestamp()
    end = start + scenario.duration_s

    def window(after: TimeSpec | None, before: TimeSpec | None, where: str) -> tuple[float, float]:
        low = start if after is None else clock.resolve(after)
        high = end if before is None else clock.resolve(before, low)
        if high < low:
            raise ScenarioError(f"{scenario.source}: {where}: `before` is earlier than `after`")
        if low < start or low > end:
            raise ScenarioError(f"{scenario.source}: {where}: `after` is outside the scenario")
        return low, high

    def utc(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    expectations = []
    for index, e in enumerate(scenario.expect):
        low, high = window(e.after, e.before, f"expect[{index}]")
        expectations.append(
            Expectation(e.alert, e.subject, utc(low), utc(high), e.late, e.within_s, e.why)
        )
    rules: dict[str, list[AlertRule]] = {"forbid": [], "allow": []}
    for what, decls in (("forbid", scenario.forbid), ("allow", scenario.allow)):
        for index, r in enumerate(decls):
            low, high = window(r.after, r.before, f"{what}[{index}]")
            rules[what].append(AlertRule(r.alert_types, r.subject, utc(low), utc(high), r.why))
    return expectations, rules["forbid"], rules["allow"]
