"""Victim protection (issue 15): panic, protection degraded, who sees them, and which OwnTracks
messages from a victim's phone are a call for help.

The rules alone (alerts/victim_rules.py), then the real engine over the in-memory repository:
a victim's panic is raised on the offender whose victim zone follows her, with her position; a
panic from an offender's device is stored and raises nothing; a victim phone that gives no
position for ``victim_max_age_s`` degrades protection on the offender's side too, and the next
fresh fix clears it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.batch import NewEvents, NewFixes
from tagwatch.alerts.engine import AlertEngine, decode_state
from tagwatch.alerts.memory_repository import MemoryEngineRepository
from tagwatch.alerts.ports import Assignment, SubjectRow, ZoneRow
from tagwatch.alerts.rules import EventObs, FixObs, SubjectState
from tagwatch.alerts.thresholds import Thresholds
from tagwatch.alerts.victim_protection import owntracks_panic, route, watchers
from tagwatch.alerts.victim_rules import (
    PANIC_FOLLOW_S,
    due_victim,
    evaluate_victim,
    tick_victim,
)

T0 = 1_780_000_000.0
INF = float("inf")
AGE = Thresholds().victim_max_age_s  # 1200 s
FIXTURES = Path(__file__).parents[1] / "fixtures" / "owntracks_victim"


def _fix(device: str, ts: float, lon: float = 18.46, lat: float = -33.98) -> FixObs:
    return FixObs(ts, device, lon, lat, 10.0)


# -- the rules alone ----------------------------------------------------------------------------


def test_a_panic_opens_a_critical_alert_with_the_position_at_the_press() -> None:
    state = SubjectState()
    changes = evaluate_victim(
        state,
        7,
        [_fix("vphone", T0, 18.40, -33.90), _fix("vphone", T0 + 300, 18.41, -33.91)],
        Thresholds(),
        T0 + 300,
    )
    assert changes == []
    changes = evaluate_victim(
        state, 7, [EventObs(T0 + 200, "vbutton", "panic")], Thresholds(), T0 + 310
    )
    [panic] = changes
    assert (panic.action, panic.type, panic.severity) == ("open", v.VICTIM_PANIC, "critical")
    assert (panic.lon, panic.lat) == (18.40, -33.90), "where she was at the press, not after"
    assert panic.details["pressed_on"] == "vbutton"
    assert panic.details["position_age_s"] == 200.0


def test_presses_within_the_follow_window_are_one_alert_that_follows_her() -> None:
    state = SubjectState()
    evaluate_victim(state, 7, [_fix("vphone", T0)], Thresholds(), T0)
    [first] = evaluate_victim(state, 7, [EventObs(T0 + 10, "vphone", "panic")], Thresholds(), T0)
    [again] = evaluate_victim(state, 7, [EventObs(T0 + 60, "vphone", "panic")], Thresholds(), T0)
    assert again.action == "update" and again.episode_key == first.episode_key
    [moved] = evaluate_victim(
        state, 7, [_fix("vphone", T0 + 120, 18.5, -33.8)], Thresholds(), T0 + 120
    )
    assert (moved.action, moved.lon, moved.lat) == ("update", 18.5, -33.8)
    tick_victim(state, 7, Thresholds(), T0 + 60 + PANIC_FOLLOW_S + 1)
    assert state.panic is None
    [later] = evaluate_victim(
        state, 7, [EventObs(T0 + 2 * PANIC_FOLLOW_S, "vphone", "panic")], Thresholds(), T0
    )
    assert later.action == "open" and later.episode_key != first.episode_key


def test_degraded_opens_when_no_position_is_younger_than_the_zones_age_limit() -> None:
    state = SubjectState()
    evaluate_victim(state, 7, [_fix("vphone", T0)], Thresholds(), T0)
    assert due_victim(state, Thresholds()) == T0 + AGE + 1
    assert tick_victim(state, 7, Thresholds(), T0 + AGE) == []
    [opened] = tick_victim(state, 7, Thresholds(), T0 + AGE + 30)
    assert (opened.action, opened.type, opened.severity) == ("open", v.VICTIM_DEGRADED, "warning")
    assert opened.first_fix_at == T0 + AGE
    assert opened.lat is None and opened.lon is None, "no position: it is about its absence"
    assert tick_victim(state, 7, Thresholds(), T0 + AGE + 600) == [], "one episode"
    stale = evaluate_victim(state, 7, [_fix("vphone", T0 + 60)], Thresholds(), T0 + AGE + 700)
    assert stale == [], "a late upload of old fixes does not put the zone back"
    [cleared] = evaluate_victim(
        state, 7, [_fix("vphone", T0 + AGE + 800)], Thresholds(), T0 + AGE + 800
    )
    assert (cleared.action, cleared.episode_key) == ("clear", opened.episode_key)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=1.0, max_value=3 * AGE), min_size=1, max_size=30))
def test_degraded_is_open_exactly_while_the_last_position_is_too_old(gaps: list[float]) -> None:
    """Fixes at random gaps, the clock ticking every 30 s between them: the episode is open at
    a tick exactly when the newest fix is older than ``victim_max_age_s`` (within a tick)."""
    state = SubjectState()
    t = T0
    evaluate_victim(state, 7, [_fix("vphone", t)], Thresholds(), t)
    last = t
    for gap in gaps:
        clock = last
        while clock + 30 < last + gap:
            clock += 30
            tick_victim(state, 7, Thresholds(), clock)
            assert (state.degraded is not None) == (clock - last > AGE), clock - last
        last += gap
        evaluate_victim(state, 7, [_fix("vphone", last)], Thresholds(), last)
        assert state.degraded is None


def test_routing_sends_a_victims_episode_to_the_offenders_zones_and_remembers_them() -> None:
    state = SubjectState(victim=True)
    evaluate_victim(state, 7, [_fix("vphone", T0)], Thresholds(), T0)
    [opened] = tick_victim(state, 7, Thresholds(), T0 + AGE + 30)
    routed = route(state, [opened], watchers({40: 1, 41: 2, 42: None}, 7))
    assert [(s, c.zone_id, c.device_id) for s, c in routed] == [(1, 40, None), (2, 41, None)]
    [cleared] = evaluate_victim(state, 7, [_fix("vphone", T0 + AGE + 60)], Thresholds(), T0)
    # the zones changed meanwhile: the clearing still goes where the opening went
    routed = route(state, [cleared], watchers({}, 7))
    assert [(s, c.action, c.zone_id) for s, c in routed] == [(1, "clear", 40), (2, "clear", 41)]
    assert state.watchers == {}
    assert watchers({}, 7) == [(7, None)], "nobody watches: the victim's own subject"


# -- which OwnTracks messages are a call for help ----------------------------------------------


def test_owntracks_panic_on_the_booklets_own_messages() -> None:
    cases = json.loads((FIXTURES / "panic_cases.json").read_text())
    for case in cases:
        got = owntracks_panic(case["message"])
        assert got is case["panic"], case["why"]
    manual = next(c["message"] for c in cases if c["message"].get("t") == "u")
    assert owntracks_panic(manual, manual_publish=False) is False
    transition = next(c["message"] for c in cases if c["panic"] and "event" in c["message"])
    assert owntracks_panic(transition, names=["Notruf"]) is False


# -- the engine over the in-memory repository --------------------------------------------------

OFFENDER, VICTIM, ZONE = 1, 2, 50


def _repo() -> MemoryEngineRepository:
    repo = MemoryEngineRepository(now=T0)
    repo.subjects = [SubjectRow(sid, "UTC", (), "za-wc", None, 1) for sid in (OFFENDER, VICTIM)]
    repo.zones = [
        ZoneRow(ZONE, "victim", None, 500.0, 500.0, OFFENDER, None, VICTIM, None, None,
                "Her (victim, 500 m)", False, 1)
    ]  # fmt: skip
    repo.assignment_rows = [
        Assignment("tag", OFFENDER, "offender", T0 - 3600, INF, 60),
        Assignment("vphone", VICTIM, "victim", T0 - 3600, INF, 300),
        Assignment("vbutton", VICTIM, "victim", T0 - 3600, INF, 3600),
    ]
    return repo


def _fixes(*rows: tuple[str, float, float, float]) -> NewFixes:
    return NewFixes.of((d, ts, lon, lat, 10.0, "gps") for d, ts, lon, lat in rows)


def _events(*rows: tuple[str, float, str]) -> NewEvents:
    return NewEvents.of((*row, None) for row in rows)  # no beacon column


def test_a_victims_panic_is_raised_on_the_offender_with_her_position() -> None:
    repo, engine = _repo(), AlertEngine()
    engine.process(
        repo, _fixes(("vphone", T0, 18.40, -33.90), ("tag", T0, 18.5, -33.9)), NewEvents()
    )
    repo.now = T0 + 30
    engine.process(repo, NewFixes(), _events(("vbutton", T0 + 20, "panic")))
    [panic] = [a for a in repo.alerts if a.type == v.VICTIM_PANIC]
    assert (panic.subject_id, panic.zone_id, panic.severity) == (OFFENDER, ZONE, "critical")
    assert (panic.lon, panic.lat) == (18.40, -33.90)
    assert panic.device_id is None, "the victim's device is not named on the offender's alert"
    assert "zone_name" not in panic.details
    assert any(o[0] == panic.alert_id and o[4] == "opened" for o in repo.outbox)
    state = repo.read_state(VICTIM)
    assert state is not None and decode_state(state.doc, state.trail).victim


def test_a_panic_from_an_offenders_device_is_stored_and_raises_nothing() -> None:
    repo, engine = _repo(), AlertEngine()
    engine.process(repo, _fixes(("tag", T0, 18.5, -33.9)), _events(("tag", T0 + 5, "panic")))
    assert [a.type for a in repo.alerts] == []


def test_a_silent_victim_phone_degrades_protection_for_the_offenders_watchers() -> None:
    repo, engine = _repo(), AlertEngine()
    engine.process(repo, _fixes(("vphone", T0, 18.40, -33.90)), NewEvents())
    t = T0
    while t < T0 + AGE + 120:
        t += 30
        repo.now = t
        engine.process(repo, _fixes(("tag", t, 18.5, -33.9)), NewEvents())
        engine.tick(repo)
    [degraded] = [a for a in repo.alerts if a.type == v.VICTIM_DEGRADED]
    assert (degraded.subject_id, degraded.zone_id, degraded.severity) == (OFFENDER, ZONE, "warning")
    assert degraded.lat is None
    assert not [a for a in repo.alerts if a.type == v.NO_COMMUNICATION], "a victim is not judged"
    repo.now = t + 10
    engine.process(repo, _fixes(("vphone", t + 5, 18.40, -33.90)), NewEvents())
    assert degraded.cleared_at == t + 5
