"""Every library scenario validates, builds, replays bit for bit, and tells the truth.

"Tells the truth": a scenario that expects an exclusion entry must have its subject truly inside
the zone in the window, and one that forbids it must never have them there. Otherwise a
platform could be blamed for the scenario's own mistake.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from tagwatch.ingest.decode import Decoded, DeviceInfo, Limits
from tagwatch.ingest.routing import decode_message
from tagwatch.simulators.geo import distance_m
from tagwatch.simulators.scenario import (
    ALERT_TYPES,
    LIBRARY,
    ScenarioRun,
    build_timeline,
    load_scenario,
)
from tagwatch.simulators.wire import LinkAction, read_trace

REQUIRED = {
    "compliant-day",
    "curfew-breach",
    "late-return",
    "exclusion-entry",
    "exclusion-near-miss",
    "drift-at-home",
    "victim-proximity",
    "strap-cut-flight",
    "coverage-gap-late",
    "battery-death",
    "jamming",
    "inclusion-exit",
    "region-move",
    "phone-monitored",
}
# Issue 14, the hard cases: small homes, a high-rise, assignments that end or change, a phone
# without accuracy, schedule exceptions and a second address, DST nights, a long
# store-and-forward, two devices on one subject, a jammer at home, a victim 600 m away.
HARD = {
    "small-home-15m",
    "small-home-25m-breach",
    "small-home-40m",
    "high-rise-flat",
    "order-ends-tag-removed",
    "tag-swap",
    "phone-no-acc",
    "curfew-exception-night",
    "curfew-alternative-address",
    "exclusion-edge-walk",
    "victim-600m",
    "dst-london-autumn",
    "dst-new-york-spring",
    "store-forward-8h",
    "tag-and-phone",
    "jammer-at-home",
}
# Issue 15, victim protection: a warning band entered, a victim's panic.
VICTIM = {"victim-warning", "victim-panic"}
DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ZONE_ALERTS = {
    "exclusion_zone_entry": ("exclusion", False),
    "exclusion_zone_warning": ("exclusion", True),
    "inclusion_zone_exit": ("inclusion", False),
    "curfew_violation": ("curfew", False),
    "victim_proximity": ("victim", False),
    "victim_proximity_warning": ("victim", True),
}


def test_the_library_has_every_scenario_the_issue_lists(library):
    names = {scenario.name for scenario in library}
    assert names >= REQUIRED | HARD | VICTIM
    assert len(library) == len(list(LIBRARY.glob("*.toml"))) >= 30


def test_every_scenario_states_what_it_expects_or_forbids(library):
    for scenario in library:
        assert scenario.description.strip(), scenario.name
        assert scenario.expect or scenario.forbid, scenario.name
        for expectation in scenario.expect:
            assert expectation.alert in ALERT_TYPES


def test_every_run_has_fresh_valid_ids_and_a_complete_plan(library_runs):
    seen: set[str] = set()
    for run in library_runs.values():
        plan = run.plan
        for device in plan.devices:
            assert DEVICE_ID.match(device.device_id), device.device_id
            assert device.device_id.startswith(f"sim-t1-{run.scenario}-")
            assert device.device_id not in seen
            seen.add(device.device_id)
            assert (device.kind == "tag") == (device.owntracks_topic is None)
        assert {a.device_id for a in plan.assignments} == {d.device_id for d in plan.devices}
        # Every subject is monitored from before the start (its first fixes are never orphans);
        # a replacement device (`assigned_from`) may start later, and an assignment that ends
        # (`assigned_until`) ends after it starts, inside the run.
        for subject in plan.subjects:
            held = [a for a in plan.assignments if a.subject_key == subject.key]
            assert any(a.start < run.start for a in held), subject.key
        for a in plan.assignments:
            assert a.end is None or a.start < a.end <= run.end
        region_ids = {r.id for r in plan.regions}
        assert {s.region_id for s in plan.subjects} <= region_ids
        for zone in plan.zones:
            assert (zone.geometry is None) == (zone.kind == "victim")
            if zone.geometry is not None:
                assert shape(zone.geometry).is_valid


def test_every_publication_decodes_through_ingest_without_a_dead_letter(library_runs):
    for run in library_runs.values():
        tags = {
            d.device_id: DeviceInfo(d.device_id, d.kind, d.owntracks_topic)
            for d in run.plan.devices
        }
        phones = {info.owntracks_topic: info for info in tags.values() if info.owntracks_topic}
        decoded = 0
        for publication in run.publications:
            out = Decoded()
            decode_message(
                publication.topic,
                publication.payload,
                publication.at + 1.0,
                tags.get,
                phones.get,
                Limits(),
                out,
            )
            assert not out.dead, (run.scenario, out.dead[0].reason, out.dead[0].detail)
            decoded += len(out.fixes)
        assert decoded == len(read_trace(run.publications)[0])


def test_publications_are_time_ordered_and_each_device_connects_before_it_speaks(library_runs):
    for run in library_runs.values():
        times = [p.at for p in run.publications]
        assert times == sorted(times)
        steps = run.steps()
        connected: set[str] = set()
        for step in steps:
            if hasattr(step, "action"):
                if step.action is LinkAction.CONNECT:
                    connected.add(step.device_id)
                else:
                    connected.discard(step.device_id)
            else:
                assert step.device_id in connected, (run.scenario, step)


@pytest.mark.parametrize("name", ["compliant-day", "victim-proximity", "coverage-gap-late"])
def test_the_same_seed_and_run_id_replay_bit_for_bit(library, name):
    scenario = next(s for s in library if s.name == name)
    a, b = build_timeline(scenario, "r1"), build_timeline(scenario, "r1")
    assert a.publications == b.publications and a.links == b.links and a.plan == b.plan


@pytest.mark.parametrize("name", ["curfew-breach", "victim-proximity"])
def test_a_new_run_id_gives_fresh_ids_and_the_same_positions(library, name):
    scenario = next(s for s in library if s.name == name)
    a, b = build_timeline(scenario, "r1"), build_timeline(scenario, "r2")
    assert {d.device_id for d in a.plan.devices}.isdisjoint(d.device_id for d in b.plan.devices)
    assert {s.name for s in a.plan.subjects}.isdisjoint(s.name for s in b.plan.subjects)
    assert [(p.at, p.payload) for p in a.publications if b"lwt" not in p.payload] == [
        (p.at, p.payload) for p in b.publications if b"lwt" not in p.payload
    ]


def test_replaying_on_another_date_keeps_local_times_and_positions(library):
    scenario = next(s for s in library if s.name == "region-move")
    tz = ZoneInfo(scenario.timezone)
    original = build_timeline(scenario, "r1")
    later = build_timeline(scenario, "r1", on_date=date(2027, 2, 1))
    shift = (date(2027, 2, 1) - date(2026, 11, 23)).days
    assert later.start.astimezone(tz).time() == original.start.astimezone(tz).time()
    assert later.publications[5].at == pytest.approx(
        original.publications[5].at + shift * 86400, abs=1e-6
    )
    fixes_a, _ = read_trace(original.publications)
    fixes_b, _ = read_trace(later.publications)
    assert [(f.lon, f.lat) for f in fixes_a] == [(f.lon, f.lat) for f in fixes_b]
    assert later.expectations == original.expectations  # none; the forbids moved instead
    assert later.forbidden[0].after - original.forbidden[0].after == timedelta(days=shift)
    exception = next(z for z in later.plan.zones if z.key == "old_curfew").schedule.exceptions[0]
    assert exception.day == date(2026, 11, 23) + timedelta(days=shift)


class _Truth:
    """Where the scenario says its subjects really were, against its zones, in metres."""

    def __init__(self, run: ScenarioRun) -> None:
        self.run = run
        self.shapes = {}
        for zone in run.plan.zones:
            if zone.geometry is None:
                continue
            geometry = shape(zone.geometry)
            centre = geometry.centroid
            project = Transformer.from_crs(
                "EPSG:4326",
                f"+proj=aeqd +lat_0={centre.y} +lon_0={centre.x} +datum=WGS84",
                always_xy=True,
            )
            metric = shapely.transform(
                geometry,
                lambda xy, project=project: np.column_stack(project.transform(xy[:, 0], xy[:, 1])),
            )
            self.shapes[zone.key] = (geometry, project, metric)

    def monitored(self, subject: str, t: float) -> bool:
        """Whether a device is assigned to `subject` at `t` (an order may end mid-scenario)."""
        return any(
            a.subject_key == subject
            and a.start.timestamp() <= t
            and (a.end is None or t < a.end.timestamp())
            for a in self.run.plan.assignments
        )

    def distance_outside(self, zone, t: float) -> float:
        """Metres outside the zone (0 inside), for the zone's subject at time t."""
        here = self.run.truth[zone.subject_key].at(t)
        if zone.kind == "victim":
            victim = self.run.truth[zone.victim_subject_key].at(t)
            metres = distance_m((here.lon, here.lat), (victim.lon, victim.lat))
            return max(0.0, metres - zone.radius_m)
        geometry, project, metric = self.shapes[zone.key]
        if zone.radius_m is not None:
            centre = (geometry.x, geometry.y)
            return max(0.0, distance_m((here.lon, here.lat), centre) - zone.radius_m)
        x, y = project.transform(here.lon, here.lat)
        return float(metric.distance(shapely.Point(x, y)))

    def violated(self, alert: str, subject: str, t: float) -> bool:
        kind, warning = ZONE_ALERTS[alert]
        if not self.monitored(subject, t):
            return False  # no device assigned: the order no longer binds (or not yet)
        for zone in self.run.plan.zones:
            if zone.kind != kind or zone.subject_key not in (None, subject):
                continue
            tz = ZoneInfo(zone.timezone)
            if zone.schedule is not None and not zone.schedule.is_active(
                datetime.fromtimestamp(t, tz), tz
            ):
                continue
            outside = self.distance_outside(zone, t)
            if kind in ("inclusion", "curfew"):
                if outside > 0:
                    return True
            elif outside == 0 or (warning and outside <= zone.buffer_m):
                return True
        return False


def _moments(after: datetime, before: datetime, step: float = 10.0):
    t = after.timestamp()
    while t <= before.timestamp():
        yield t
        t += step


def test_expected_zone_alerts_are_true_violations_in_their_window(library_runs):
    for run in library_runs.values():
        truth = _Truth(run)
        for expectation in run.expectations:
            if expectation.alert not in ZONE_ALERTS:
                continue
            assert any(
                truth.violated(expectation.alert, expectation.subject, t)
                for t in _moments(expectation.after, expectation.before)
            ), (run.scenario, expectation)


def test_forbidden_zone_alerts_are_never_true_violations(library_runs):
    for run in library_runs.values():
        truth = _Truth(run)
        for rule in run.forbidden:
            subjects = [rule.subject] if rule.subject else [s.key for s in run.plan.subjects]
            kinds = ZONE_ALERTS if rule.alerts is None else rule.alerts & ZONE_ALERTS.keys()
            for alert in kinds:
                for subject in subjects:
                    if any(
                        d.subject_key == subject and d.role == "victim" for d in run.plan.devices
                    ):
                        continue  # victims are not monitored for zones
                    bad = [
                        t
                        for t in _moments(rule.after, rule.before, 30.0)
                        if truth.violated(alert, subject, t)
                    ]
                    assert not bad, (run.scenario, alert, subject, bad[:1])


def test_scripted_device_events_land_in_their_expectation_windows(library_runs):
    events_for = {
        "strap_tamper": "strap_tamper",
        "case_tamper": "case_tamper",
        "battery_low": "battery_low",
        "battery_critical": "battery_critical",
        "gps_jamming": "jamming_detected",
        "gps_lost": "gps_lost",
    }
    for run in library_runs.values():
        _, events = read_trace(run.publications)
        for expectation in run.expectations:
            kind = events_for.get(expectation.alert)
            if kind is None:
                continue
            assert any(
                e.type == kind
                and expectation.after.timestamp() <= e.ts <= expectation.before.timestamp()
                for e in events
            ), (run.scenario, expectation)


def test_the_late_scenario_uploads_its_entry_late(library_runs):
    run = library_runs["coverage-gap-late"]
    expectation = next(e for e in run.expectations if e.late)
    fixes, _ = read_trace(run.publications)
    in_window = [
        f for f in fixes if expectation.after.timestamp() <= f.ts <= expectation.before.timestamp()
    ]
    assert in_window and all(f.received_at - f.ts > 3600 for f in in_window)


def test_the_phone_and_victim_scenarios_use_owntracks(library_runs):
    for name in ("phone-monitored", "victim-proximity"):
        run = library_runs[name]
        phones = [d for d in run.plan.devices if d.kind != "tag"]
        assert phones and all(d.owntracks_topic.startswith("owntracks/") for d in phones)
        assert all(d.expected_interval_s == 900 for d in phones)


def test_load_scenario_checks_the_file_name(tmp_path):
    source = (LIBRARY / "case-tamper.toml").read_text()
    (tmp_path / "other.toml").write_text(source)
    with pytest.raises(ValueError, match="must match the file name"):
        load_scenario(tmp_path / "other.toml")


def test_the_victims_panic_button_presses_once_as_a_victims_device(library_runs):
    """victim-panic: the button is a tag-format device held as victim; it sends one `panic`
    at 20:40 local time, and only it does."""
    run = library_runs["victim-panic"]
    button = next(d for d in run.plan.devices if d.key == "button")
    assert (button.kind, button.role) == ("tag", "victim")
    _, events = read_trace(run.publications)
    panics = [e for e in events if e.type == "panic"]
    assert [e.device_id for e in panics] == [button.device_id]
    local = datetime.fromtimestamp(panics[0].ts, ZoneInfo("Africa/Johannesburg"))
    assert (local.hour, local.minute) == (20, 40)
