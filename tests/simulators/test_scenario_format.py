"""The loader refuses what a supervisor might get wrong, and says where."""

from __future__ import annotations

import re
import tomllib
from copy import deepcopy

import pytest

from tagwatch.simulators import scenario_format, scenario_plan
from tagwatch.simulators.scenario import (
    LIBRARY,
    ScenarioError,
    build_timeline,
    parse_scenario,
    read_scenario,
    validate_scenario,
)
from tagwatch.simulators.scoring import naive_alerts, score_run

BASE = tomllib.loads((LIBRARY / "curfew-breach.toml").read_text())


def _parse(change) -> None:
    raw = deepcopy(BASE)
    change(raw)
    parse_scenario(raw, "test.toml")


def _fails(change, *fragments: str) -> None:
    with pytest.raises(ScenarioError) as info:
        _parse(change)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_the_library_file_parses():
    scenario = parse_scenario(deepcopy(BASE), "test.toml")
    assert scenario.name == "curfew-breach" and scenario.subjects[0].key == "sipho"


def test_a_typo_in_a_key_is_named_with_a_suggestion():
    _fails(lambda r: r["devices"][0].update(incidnets=[]), "devices[0].incidnets", "incidents")


def test_an_unknown_alert_type_suggests_the_vocabulary():
    _fails(
        lambda r: r["expect"][0].update(alert="curfew_violaton"),
        "expect[0].alert",
        "curfew_violation",
    )


def test_unknown_places_subjects_and_regions_are_refused():
    _fails(lambda r: r["subjects"][0]["itinerary"][1].update(go="pub"), "unknown place 'pub'")
    _fails(lambda r: r["devices"][0].update(subject="nobody"), "unknown subject 'nobody'")
    _fails(lambda r: r["subjects"][0].update(region="xx"), "unknown region 'xx'")


def test_times_need_offsets_and_clock_times_must_be_real():
    _fails(lambda r: r.update(start="2026-11-23T06:00:00"), "no UTC offset")
    _fails(lambda r: r["expect"][0].update(after="25:00"), "not a clock time")
    _fails(lambda r: r["expect"][0].update(before="soon"), "is not a time")


def test_tag_only_incidents_are_refused_on_phones():
    def phone(raw):
        raw["devices"][0]["kind"] = "phone"
        raw["devices"][0]["incidents"] = [{"type": "strap_cut", "at": "09:00"}]

    _fails(phone, "strap_cut happens to tags only")


def test_an_expectation_may_not_also_be_forbidden():
    _fails(
        lambda r: r["forbid"][0].update(after="22:05"),
        "both expected and forbidden",
    )


def test_victim_zones_need_a_victim_with_a_phone():
    def victim_zone(raw):
        raw["zones"].append({"key": "v", "kind": "victim", "subject": "sipho", "victim": "sipho"})

    _fails(victim_zone, "has no victim_phone device")


def test_zone_geometry_is_exactly_one_form_and_valid():
    _fails(lambda r: r["zones"][0].update(point=[18.4, -33.9]), "exactly one of")

    def bowtie(raw):
        zone = raw["zones"][0]
        del zone["around"], zone["box_m"]
        zone["polygon"] = [[18.40, -33.90], [18.41, -33.91], [18.41, -33.90], [18.40, -33.91]]

    _fails(bowtie, "self-intersection")


def test_windows_are_checked_against_the_scenario():
    _fails(lambda r: r["expect"][0].update(after="+30h"), "outside the scenario")


def test_itinerary_timing_errors_surface_when_the_trip_is_laid_out():
    raw = deepcopy(BASE)
    raw["subjects"][0]["itinerary"][2]["until"] = "07:40"  # at work 5 minutes after leaving home
    scenario = parse_scenario(raw, "test.toml")
    with pytest.raises(ScenarioError, match=r"subjects\[0\]\.itinerary\[2\].*only gets there"):
        build_timeline(scenario, "x")


def test_run_ids_are_short_and_plain():
    scenario = parse_scenario(deepcopy(BASE), "test.toml")
    with pytest.raises(ScenarioError, match="run id"):
        build_timeline(scenario, "not/valid")


def test_the_documented_example_is_a_valid_scenario(tmp_path):
    docs = (LIBRARY.parent / "docs" / "simulators.md").read_text()
    example = re.search(r"```toml\n(.*?)```", docs, re.DOTALL)
    assert example is not None
    path = tmp_path / "school-run.toml"
    path.write_text(example.group(1))
    scenario = validate_scenario(path)
    run = build_timeline(scenario, "doc")
    assert run.publications and run.forbidden
    assert score_run(run, []).passed
    assert isinstance(naive_alerts(run), list)


def test_names_durations_and_zones_say_what_was_expected():
    _fails(lambda r: r.update(name="Curfew Breach"), "test.toml", "name", "lower-case letters")
    _fails(lambda r: r.update(duration="a day"), "duration", "not a duration like '90s'")
    _fails(lambda r: r.update(duration="0s"), "duration", "must be positive")
    _fails(lambda r: r.update(timezone="Mars/Olympus"), "unknown IANA time zone 'Mars/Olympus'")
    _fails(lambda r: r.update(regions=[]), "at least one [[regions]] entry is required")


def test_duplicate_keys_are_refused():
    _fails(lambda r: r["devices"].append(deepcopy(r["devices"][0])), "devices")


def test_the_window_check_runs_in_parse_but_not_in_read():
    """`read_scenario` checks entries only; `parse_scenario` (what load_scenario uses) adds the
    windows, which need the resolved clock: the split must not lose that check."""
    raw = deepcopy(BASE)
    raw["forbid"][0]["after"] = "22:05"
    assert read_scenario(raw, "test.toml").name == "curfew-breach"
    with pytest.raises(ScenarioError, match="both expected and forbidden"):
        parse_scenario(raw, "test.toml")


def test_the_entry_module_re_exports_what_importers_use():
    """runner, scoring, offline, cli, tests and benches import from `scenario`; the split into
    format, plan and timeline must keep every one of those names there."""
    from tagwatch.simulators import scenario

    for name in (
        "ALERT_TYPES",
        "LIBRARY",
        "AlertRule",
        "Expectation",
        "Scenario",
        "ScenarioError",
        "ScenarioRun",
        "ZonePlan",
        "build_timeline",
        "find_scenario",
        "load_library",
        "load_scenario",
        "parse_scenario",
        "validate_scenario",
    ):
        assert hasattr(scenario, name), name
    assert scenario.ScenarioRun is scenario_plan.ScenarioRun
    assert scenario.Scenario is scenario_format.Scenario


def test_unknown_keys_are_refused_at_any_depth_with_a_suggestion():
    _fails(lambda r: r.update(sede=3), "test.toml: sede: unknown key", "'seed'")
    _fails(
        lambda r: r["devices"][0].update(battery={"strat": 50}),
        "devices[0].battery.strat: unknown key",
        "'start'",
    )
    _fails(
        lambda r: r["places"].update(home={"lon": 18.47, "lat": -33.94, "skye": "open"}),
        "places.home.skye: unknown key",
    )
    # a key of another kind of stop is unknown on this one
    _fails(
        lambda r: r["subjects"][0]["itinerary"][1].update(until="08:00"),
        "subjects[0].itinerary[1].until: unknown key",
    )
    # `source` is a field of the declared Scenario (the file's name), not a key of the file
    _fails(lambda r: r.update(source="elsewhere.toml"), "test.toml: source: unknown key")


def test_wrong_types_name_the_entry_and_what_was_expected():
    _fails(lambda r: r.update(seed="1002"), "test.toml: seed: expected int, got str")
    _fails(lambda r: r.update(seed=True), "seed: expected int, got bool")
    _fails(lambda r: r["devices"][0].pop("kind"), "devices[0].kind: is required")
    _fails(
        lambda r: r["devices"][0].update(kind="tog"),
        "devices[0].kind: 'tog' is not one of tag, phone, victim_phone",
    )
    _fails(
        lambda r: r["subjects"][0]["itinerary"][1].update(by="bike"),
        "subjects[0].itinerary[1].by: 'bike' is not one of foot, car, highway",
    )
    _fails(lambda r: r["places"].update(home="here"), "places.home: expected object, got str")
    _fails(lambda r: r["devices"][0].update(key="a tag"), "devices[0].key: expected letters")
    _fails(lambda r: r["expect"][0].update(within="4 min"), "expect[0].within", "not a duration")


def test_out_of_range_values_name_the_bound():
    _fails(
        lambda r: r["devices"][0].update(battery={"start": 120}),
        "devices[0].battery.start: expected <= 100",
    )
    _fails(
        lambda r: r["devices"][0].update(battery={"drain_per_hour": -1}),
        "devices[0].battery.drain_per_hour: expected >= 0",
    )
    _fails(lambda r: r["places"].update(home=[18.47, -95.0]), "places.home[1]: expected >= -90")
    _fails(lambda r: r["places"].update(home=[18.47, -33.9, 3.0]), "places.home: expected array")
    _fails(lambda r: r["zones"][0].update(box_m=[0, 30]), "zones[0].box_m[0]: expected > 0")

    def jumpy(raw):
        incident = {"type": "urban", "from": "09:00", "jump_probability": 1.5}
        raw["devices"][0]["incidents"] = [incident]

    _fails(jumpy, "devices[0].incidents[0].jump_probability: expected <= 1")


def test_bad_cross_references_name_the_entry():
    _fails(lambda r: r["zones"][0].update(around="office"), "zones[0].around: unknown place")
    _fails(lambda r: r["expect"][0].update(subject="thabo"), "expect[0].subject: unknown subject")
    _fails(lambda r: r["forbid"][1].update(subject="thabo"), "forbid[1].subject: unknown subject")
    _fails(
        lambda r: r["devices"][0].update(home_beacon="office"),
        "devices[0].home_beacon: unknown place 'office'",
    )
    _fails(
        lambda r: r["subjects"][0].update(region_changes=[{"at": "12:00", "region": "xx"}]),
        "subjects[0].region_changes[0].region: unknown region 'xx'",
    )

    def strap_cut_from(raw):
        raw["devices"][0]["incidents"] = [{"type": "strap_cut", "from": "09:00"}]

    _fails(strap_cut_from, "devices[0].incidents[0]", "strap_cut happens `at` a moment")


def test_load_scenario_names_the_file(tmp_path):
    text = (LIBRARY / "curfew-breach.toml").read_text().replace("seed = 1002", "seed = -1.5")
    path = tmp_path / "curfew-breach.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"curfew-breach\.toml: seed: expected int, got float"):
        validate_scenario(path)


def test_an_assignment_may_end_or_start_mid_scenario():
    raw = deepcopy(BASE)
    raw["devices"][0].update(assigned_until="12:00")
    run = build_timeline(parse_scenario(raw, "test.toml"), "t1")
    (assignment,) = run.plan.assignments
    assert assignment.end is not None and assignment.start < run.start < assignment.end
    raw["devices"][0].update(assigned_from="13:00")
    with pytest.raises(ScenarioError, match=r"devices\[0\]\.assigned_until"):
        build_timeline(parse_scenario(raw, "test.toml"), "t1")


def test_a_phone_may_leave_out_acc_but_a_tag_may_not():
    _fails(lambda r: r["devices"][0].update(sends_acc=False), "devices[0].sends_acc", "phones")
    raw = deepcopy(BASE)
    raw["devices"][0].update(kind="phone", sends_acc=False, incidents=[])
    run = build_timeline(parse_scenario(raw, "test.toml"), "t1")
    assert run.publications and all(b'"acc"' not in p.payload for p in run.publications)
