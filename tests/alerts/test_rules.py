"""Properties of the rule core, on synthetic classifications (no geometry involved)."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tagwatch.alerts.rules import EventObs, FixObs, SubjectState, ZoneMeta, ZoneObs, evaluate, tick
from tagwatch.alerts.thresholds import Thresholds
from tagwatch.geofence import INSIDE, OUTSIDE, UNCERTAIN

T = Thresholds()
ZONE = ZoneMeta(7, "exclusion", buffer_m=None, thresholds=T, name="victim home")
ZONES = {7: ZONE}
ACC = 8.0

# a fix's relation to the zone: deep inside (evidence), inside near the edge (no evidence),
# uncertain, outside
KINDS = st.sampled_from(["deep", "edge", "uncertain", "out"])


def fix(ts: float, kind: str) -> FixObs:
    state, d = {
        "deep": (INSIDE, -50.0),
        "edge": (INSIDE, -10.0),
        "uncertain": (UNCERTAIN, 3.0),
        "out": (OUTSIDE, 40.0),
    }[kind]
    return FixObs(ts, "tag-1", 18.4, -33.9, ACC, (ZoneObs(7, state, False, d, True),))


def trace(kinds: list[str], start: float = 1_800_000_000.0, step: float = 60.0) -> list[FixObs]:
    return [fix(start + i * step, k) for i, k in enumerate(kinds)]


def run(fixes: list[FixObs], batches: list[int] | None = None) -> list[tuple[str, str]]:
    """Feed ``fixes`` in batches, the state going through JSON between them as in the database."""
    state_json: dict[str, object] = SubjectState().to_json()
    out = []
    cuts = [*sorted(set(batches or [])), len(fixes)]
    start = 0
    for cut in cuts:
        state = SubjectState.from_json(json.loads(json.dumps(state_json)))
        chunk = fixes[start:cut]
        now = chunk[-1].ts if chunk else 0.0
        out += [(c.action, c.episode_key) for c in evaluate(state, chunk, ZONES, T, now)]
        state_json = state.to_json()
        start = cut
    return out


def evidence_runs(kinds: list[str]) -> int:
    """How many maximal runs of consecutive evidence are long enough to open an episode."""
    runs, n = 0, 0
    for k in [*kinds, "out"]:
        if k == "deep":
            n += 1
        else:
            runs += n >= T.entry_fixes
            n = 0
    return runs


@settings(max_examples=300, deadline=None)
@given(st.lists(KINDS, max_size=60))
def test_no_alert_without_a_confident_violation_of_dwell_length(kinds: list[str]) -> None:
    changes = run(trace(kinds))
    opens = [key for action, key in changes if action == "open"]
    assert len(opens) <= evidence_runs(kinds)
    if evidence_runs(kinds):
        assert opens, "a dwell-long run of evidence must open an episode"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["edge", "uncertain"]), max_size=20),
    st.integers(min_value=4, max_value=30),
    st.lists(st.sampled_from(["deep", "edge", "uncertain"]), max_size=30),
)
def test_one_alert_per_episode_whatever_the_noise(
    before: list[str], dwell: int, noisy_middle: list[str]
) -> None:
    """Once open, noise inside the zone (edge fixes, uncertain ones) never raises a second."""
    kinds = [*before, *["deep"] * dwell, *noisy_middle, "deep"]
    changes = run(trace(kinds))
    assert sum(action == "open" for action, _ in changes) == 1
    assert sum(action == "clear" for action, _ in changes) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(KINDS, min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=6))
def test_batching_and_order_of_delivery_do_not_change_the_alerts(
    kinds: list[str], cuts: list[int]
) -> None:
    fixes = trace(kinds)
    whole = run(fixes)
    assert run(fixes, [c for c in cuts if c < len(fixes)]) == whole
    shuffled = fixes[:]
    random.Random(len(kinds)).shuffle(shuffled)
    state = SubjectState()
    assert [(c.action, c.episode_key) for c in evaluate(state, shuffled, ZONES, T, 0.0)] == whole


def test_the_episode_clears_after_the_clear_dwell_at_the_first_clear_fix() -> None:
    fixes = trace(["deep"] * 5 + ["out"] * 4)
    state = SubjectState()
    changes = evaluate(state, fixes, ZONES, T, fixes[-1].ts)
    clear = [c for c in changes if c.action == "clear"]
    assert len(clear) == 1
    assert clear[0].at == fixes[5].ts
    opened = next(c for c in changes if c.action == "open")
    assert opened.first_fix_at == fixes[0].ts
    assert opened.at == fixes[3].ts  # the fourth fix completes the dwell


def test_a_curfew_window_ending_closes_the_episode_at_once() -> None:
    curfew = ZoneMeta(3, "curfew", thresholds=T)
    far = [
        FixObs(1000.0 + 60 * i, "t", 0, 0, 5.0, (ZoneObs(3, OUTSIDE, False, 300.0, i < 6),))
        for i in range(8)
    ]
    changes = evaluate(SubjectState(), far, {3: curfew}, T, 2000.0)
    assert [c.action for c in changes if c.action != "update"] == ["open", "clear"]
    assert next(c for c in changes if c.action == "clear").at == far[6].ts


def test_silence_and_talking_without_fixes() -> None:
    state = SubjectState()
    evaluate(state, [fix(0.0, "out")], ZONES, T, 0.0)
    limit = T.silence_limit_s(60.0)
    changes, due = tick(state, ZONES, T, limit - 1)
    assert changes == []
    assert due is not None
    assert due <= limit + 1
    changes, _ = tick(state, ZONES, T, limit + 5)
    assert [(c.action, c.type) for c in changes] == [("open", "no_communication")]
    # speaking again clears it; heartbeats without fixes for 10 minutes are gps_lost
    beats = [EventObs(limit + 60 * i, "tag-1", "heartbeat") for i in range(1, 12)]
    changes = evaluate(state, beats, ZONES, T, limit + 60)
    kinds = [(c.action, c.type) for c in changes]
    assert ("clear", "no_communication") in kinds
    assert ("open", "gps_lost") in kinds


def test_gps_restored_ends_the_episode_and_its_fix_arriving_later_opens_no_other() -> None:
    """Found by the real pipeline: the restore event and the fix after it arrive in separate
    batches; measuring 'talking without a fix' from the fix before the basement reopened it."""
    state = SubjectState()
    evaluate(state, [fix(0.0, "out")], ZONES, T, 0.0)
    beats = [EventObs(60.0 * i, "tag-1", "heartbeat") for i in range(1, 31)]
    changes = evaluate(state, beats, ZONES, T, 1800.0)
    assert [(c.action, c.type) for c in changes].count(("open", "gps_lost")) == 1
    changes = evaluate(state, [EventObs(1900.0, "tag-1", "gps_restored")], ZONES, T, 1900.0)
    assert [(c.action, c.type) for c in changes] == [("clear", "gps_lost")]
    changes = evaluate(state, [fix(1900.0, "out")], ZONES, T, 1901.0)
    assert [c for c in changes if c.type == "gps_lost"] == []
    # and the restoration itself is not a fix: silence about positions starts again from it
    later = [EventObs(1900.0 + 60.0 * i, "tag-1", "heartbeat") for i in range(1, 12)]
    state2 = SubjectState()
    evaluate(state2, [fix(0.0, "out")], ZONES, T, 0.0)
    evaluate(state2, [EventObs(1900.0, "tag-1", "gps_restored")], ZONES, T, 1900.0)
    changes = evaluate(state2, later[:5], ZONES, T, 2200.0)
    assert [c for c in changes if c.type == "gps_lost"] == []


def test_tamper_opens_once_and_clears_on_restore() -> None:
    events = [
        EventObs(10.0, "tag-1", "strap_tamper"),
        EventObs(20.0, "tag-1", "strap_tamper"),
        EventObs(30.0, "tag-1", "strap_restored"),
    ]
    changes = evaluate(SubjectState(), events, ZONES, T, 30.0)
    assert [c.action for c in changes] == ["open", "update", "clear"]
    assert len({c.episode_key for c in changes}) == 1


def test_threshold_overrides_are_checked() -> None:
    import pytest

    from tagwatch.alerts.thresholds import ThresholdError, layered

    assert layered({"entry_fixes": 2}, {"entry_s": 30}).entry_fixes == 2
    for bad in ({"nope": 1}, {"entry_fixes": 0}, {"entry_fixes": 1.5}, {"entry_s": "x"}):
        with pytest.raises(ThresholdError):
            layered(bad)
