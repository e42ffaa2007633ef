"""The rule core trusts a home beacon only when it is the subject's approved one (issue 14).

A tag's MQTT credentials are in the wearer's hands, so `beacon_home_enter` is a claim anyone
holding the tag can make. These nights put the subject 700 m from home, outdoors, during the
curfew, with a beacon event at the start: only an enter that names the approved beacon keeps
the subject "home"; no approval, no id, another id, an approval cleared or replaced since, or a
state saved before beacons were approved all leave GPS to decide, and the violation opens.
"""

from __future__ import annotations

import json
import random

import pytest

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.observe import observe
from tagwatch.alerts.rules import AlertChange, EventObs, SubjectState, ZoneMeta, evaluate, tick
from tests.alerts.test_curfew_presence import (
    EVENING,
    ZONE_ID,
    T,
    away_fix,
    curfew_changes,
    small_home_index,
)

OUT = EVENING + 3600.0  # 19:00, the window opens
APPROVED = "HB-0042"


def night_out(
    beacon_event: EventObs | None,
    approved: str | None,
    reapproved: tuple[str | None] | None = None,
    state: SubjectState | None = None,
) -> list[AlertChange]:
    """Forty minutes away from home from 19:00, a fix a minute, the clock ticking; the beacon
    event (if any) a minute before. ``reapproved``: (the approval from minute 10 on,)."""
    index = small_home_index()
    zones = {ZONE_ID: ZoneMeta(ZONE_ID, "curfew", thresholds=T, name="home")}
    rng = random.Random(7)
    doc = (state or SubjectState()).to_json()
    changes: list[AlertChange] = []
    for minute in range(40):
        now = OUT + minute * 60.0
        current = approved if minute < 10 or reapproved is None else reapproved[0]
        s = SubjectState.from_json(json.loads(json.dumps(doc)))
        batch: list = list(observe(index, [away_fix(rng, now + 7.0)]))
        if minute == 0 and beacon_event is not None:
            batch.append(beacon_event)
        changes += evaluate(s, batch, zones, T, now + 9.0, home_beacon=current)
        ticked, _ = tick(
            s, zones, T, now + 59.0, [ZONE_ID], lambda _z, _t: True, home_beacon=current
        )
        changes += ticked
        doc = s.to_json()
    return changes


def enter(beacon: str | None) -> EventObs:
    return EventObs(OUT - 60.0, "tag-1", "beacon_home_enter", beacon)


def opened(changes: list[AlertChange]) -> list[AlertChange]:
    return [c for c in curfew_changes(changes) if c.action == "open"]


def test_without_a_beacon_the_departure_opens_a_violation() -> None:
    assert len(opened(night_out(None, None))) == 1


@pytest.mark.parametrize(
    ("approved", "named"),
    [
        (None, APPROVED),  # nothing approved: no beacon event counts
        (APPROVED, None),  # an enter naming no beacon: not trusted
        (APPROVED, "HB-9999"),  # another beacon (a forger's guess, a neighbour's unit)
    ],
)
def test_an_unapproved_beacon_enter_does_not_make_the_subject_home(
    approved: str | None, named: str | None
) -> None:
    found = opened(night_out(enter(named), approved))
    assert len(found) == 1
    assert found[0].type == v.CURFEW_VIOLATION


def test_the_approved_beacon_in_range_is_home_whatever_gps_says() -> None:
    assert opened(night_out(enter(APPROVED), APPROVED)) == []


def test_a_leave_naming_no_beacon_still_ends_the_beacon_s_word() -> None:
    """A leave only withdraws trust (GPS decides again): believed whatever it names."""
    events = [enter(APPROVED), EventObs(OUT - 30.0, "tag-1", "beacon_home_leave", None)]
    state = SubjectState()
    evaluate(state, events, {}, T, OUT, home_beacon=APPROVED)
    assert state.beacon_home is False
    assert len(opened(night_out(None, APPROVED, state=state))) == 1


@pytest.mark.parametrize("later", [None, "HB-0043"])
def test_an_approval_cleared_or_replaced_stops_the_old_beacon_counting(later: str | None) -> None:
    """In range under the approval; from minute 10 the approval is cleared or names another
    unit: the enter seen before no longer counts and the departure opens the violation."""
    found = opened(night_out(enter(APPROVED), APPROVED, (later,)))
    assert len(found) == 1
    assert found[0].first_fix_at is not None and found[0].first_fix_at >= OUT + 600.0


def test_a_state_saved_before_beacons_were_approved_is_not_trusted() -> None:
    """rule_state rows written by the previous version carry ``beacon_home: true`` from any
    tag's say-so and no beacon id: that word is not carried over."""
    old = SubjectState.from_json({"beacon_home": True, "tracks": {}, "devices": {}})
    assert old.beacon_id is None
    assert len(opened(night_out(None, APPROVED, state=old))) == 1
