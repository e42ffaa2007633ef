"""Declarative scenarios: one TOML file per story, with the alerts it must and must not raise.

A scenario is written for a supervisor to read (places, a day's itinerary, a curfew, what goes
wrong and when) and for CI to hold the platform to (`[[expect]]`, `[[forbid]]`, `[[allow]]`).
`load_scenario` validates a file and says precisely what is wrong and where; `build_timeline`
turns it into a `ScenarioRun`: the provisioning plan (regions, subjects, devices, assignments,
zones as GeoJSON) and the merged, time-ordered publications of every device, reproducible from
the scenario's seed, with fresh ids from the caller's run id. docs/simulators.md is the format's
reference.

The work is split by job: `scenario_format` (what a file may say, read into a declared
`Scenario`), `scenario_plan` (the resolved plan and alert windows) and `scenario_timeline`
(the publications). This module is the entry point the runner, the scorer, the offline checker,
the CLI and the tests import from; it re-exports their names so the split changes no importer.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tagwatch.alerts.vocabulary import ALERT_TYPES
from tagwatch.simulators.scenario_format import (
    CLOCK,
    DURATION,
    KEY_PATTERN,
    LIBRARY,
    NAME_PATTERN,
    PHONE_EXPECTED_INTERVAL_S,
    REGION_PATTERN,
    ROLES,
    RUN_PATTERN,
    STOP_KINDS,
    VICTIM_RADIUS_M,
    ZONE_KINDS,
    Clock,
    DeviceDecl,
    ExpectDecl,
    IncidentDecl,
    RegionChangeDecl,
    RegionDecl,
    RoutineDecl,
    RuleDecl,
    Scenario,
    ScenarioError,
    StopDecl,
    SubjectDecl,
    TimeSpec,
    ZoneDecl,
    parse_duration,
    parse_time,
    read_scenario,
)
from tagwatch.simulators.scenario_plan import (
    AlertRule,
    AssignmentPlan,
    DevicePlan,
    Expectation,
    ProvisioningPlan,
    RegionChange,
    RegionPlan,
    ScenarioRun,
    SubjectPlan,
    ZonePlan,
    check_rules,
    resolve_rules,
)
from tagwatch.simulators.scenario_timeline import build_timeline, derive_seed

__all__ = [
    "ALERT_TYPES",
    "CLOCK",
    "DURATION",
    "KEY_PATTERN",
    "LIBRARY",
    "NAME_PATTERN",
    "PHONE_EXPECTED_INTERVAL_S",
    "REGION_PATTERN",
    "ROLES",
    "RUN_PATTERN",
    "STOP_KINDS",
    "VICTIM_RADIUS_M",
    "ZONE_KINDS",
    "AlertRule",
    "AssignmentPlan",
    "Clock",
    "DeviceDecl",
    "DevicePlan",
    "ExpectDecl",
    "Expectation",
    "IncidentDecl",
    "ProvisioningPlan",
    "RegionChange",
    "RegionChangeDecl",
    "RegionDecl",
    "RegionPlan",
    "RoutineDecl",
    "RuleDecl",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "StopDecl",
    "SubjectDecl",
    "SubjectPlan",
    "TimeSpec",
    "ZoneDecl",
    "ZonePlan",
    "build_timeline",
    "check_rules",
    "derive_seed",
    "find_scenario",
    "load_library",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "parse_time",
    "read_scenario",
    "resolve_rules",
    "validate_scenario",
]


def parse_scenario(raw: Mapping[str, Any], source: str = "<memory>") -> Scenario:
    """A checked scenario from parsed TOML: every entry (`read_scenario`), then the alert
    windows, which need the resolved clock (ordered, inside the run, never both expected and
    forbidden)."""
    scenario = read_scenario(raw, source)
    check_rules(scenario)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file; `ScenarioError` says what is wrong and where."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    scenario = parse_scenario(raw, str(path))
    if scenario.name != path.stem:
        raise ScenarioError(f"{path}: name {scenario.name!r} must match the file name")
    return scenario


def load_library(directory: str | Path = LIBRARY) -> list[Scenario]:
    return [load_scenario(path) for path in sorted(Path(directory).glob("*.toml"))]


def find_scenario(name: str, directory: str | Path = LIBRARY) -> Path:
    path = Path(directory) / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(directory).glob("*.toml"))
        raise ScenarioError(f"no scenario {name!r}; known: {', '.join(known)}")
    return path


def validate_scenario(path: str | Path) -> Scenario:
    """Load and build once: itinerary timing errors only show when the trip is laid out."""
    scenario = load_scenario(path)
    build_timeline(scenario, "check")
    return scenario
