"""Every library scenario built once per session: building is pure and deterministic."""

from __future__ import annotations

import pytest

from tagwatch.simulators.scenario import (
    LIBRARY,
    Scenario,
    ScenarioRun,
    build_timeline,
    load_library,
)


@pytest.fixture(scope="session")
def library() -> list[Scenario]:
    return load_library(LIBRARY)


@pytest.fixture(scope="session")
def library_runs(library: list[Scenario]) -> dict[str, ScenarioRun]:
    return {scenario.name: build_timeline(scenario, "t1") for scenario in library}
