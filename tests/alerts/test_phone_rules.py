"""The phone rules (issue 15): unknown accuracy is never evidence but is communication; battery
from `batt`/`bs`; monitoring mode; silence in move mode; the broker's last will."""

from __future__ import annotations

import math

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.rules import (
    FixObs,
    PhoneObs,
    SubjectState,
    ZoneMeta,
    ZoneObs,
    evaluate,
    tick,
)
from tagwatch.alerts.thresholds import Thresholds
from tagwatch.geofence import INSIDE

T0 = 1_800_000_000.0
EXCLUSION = {1: ZoneMeta(1, "exclusion")}
TH = Thresholds()


def deep_inside(ts: float, acc: float) -> FixObs:
    z = ZoneObs(1, INSIDE, in_band=False, distance_m=-500.0, active=True)
    return FixObs(ts, "p1", 0.0, 0.0, acc, (z,))


def opened(changes) -> list[str]:
    return [c.type for c in changes if c.action == "open"]


def test_fixes_of_unknown_accuracy_are_never_evidence_but_are_communication():
    state = SubjectState()
    unknown = [deep_inside(T0 + 60 * i, math.nan) for i in range(10)]
    assert opened(evaluate(state, unknown, EXCLUSION, TH, now=T0 + 600)) == []
    assert state.devices["p1"].last_heard == T0 + 600
    assert state.trail == []  # no position of unknown size in the trail
    known = [deep_inside(T0 + 600 + 60 * i, 5.0) for i in range(4)]
    assert opened(evaluate(state, known, EXCLUSION, TH, now=T0 + 900)) == [v.EXCLUSION_ENTRY]


def test_only_unknown_accuracy_for_longer_than_the_threshold_raises_a_quality_alert():
    state = SubjectState()
    hour = TH.unknown_accuracy_s
    first = evaluate(state, [deep_inside(T0, math.nan)], EXCLUSION, TH, now=T0)
    later = evaluate(state, [deep_inside(T0 + hour - 1, math.nan)], EXCLUSION, TH, now=T0 + hour)
    assert opened(first + later) == []
    changes = evaluate(state, [deep_inside(T0 + hour, math.nan)], EXCLUSION, TH, now=T0 + hour)
    assert opened(changes) == [v.POSITION_ACCURACY_UNKNOWN]
    cleared = evaluate(state, [deep_inside(T0 + hour + 60, 5.0)], EXCLUSION, TH, now=T0 + hour)
    assert [c.type for c in cleared if c.action == "clear"] == [v.POSITION_ACCURACY_UNKNOWN]


def phone(ts: float, **fields) -> PhoneObs:
    return PhoneObs(ts, "p1", fields.pop("kind", "location"), **fields)


def test_phone_battery_low_then_critical_and_charging_clears_them():
    state = SubjectState()
    changes = evaluate(state, [phone(T0, batt=19.0, charging=1)], {}, TH, now=T0)
    assert opened(changes) == [v.BATTERY_LOW]
    again = evaluate(state, [phone(T0 + 60, batt=18.0, charging=1)], {}, TH, now=T0 + 60)
    assert opened(again) == []  # one episode
    critical = evaluate(state, [phone(T0 + 120, batt=9.0)], {}, TH, now=T0 + 120)
    assert opened(critical) == [v.BATTERY_CRITICAL]
    plugged = evaluate(state, [phone(T0 + 180, batt=9.0, charging=2)], {}, TH, now=T0 + 180)
    assert sorted(c.type for c in plugged if c.action == "clear") == [
        v.BATTERY_CRITICAL,
        v.BATTERY_LOW,
    ]


def test_unknown_battery_raises_nothing():
    state = SubjectState()
    assert opened(evaluate(state, [phone(T0, batt=math.nan)], {}, TH, now=T0)) == []


def test_quiet_or_manual_mode_is_monitoring_degraded_until_it_reports_again():
    state = SubjectState()
    changes = evaluate(state, [phone(T0, mode=-1)], {}, TH, now=T0)
    assert opened(changes) == [v.PHONE_MONITORING_DEGRADED]
    assert changes[0].details["reason"] == "monitoring_quiet"
    back = evaluate(state, [phone(T0 + 60, mode=1)], {}, TH, now=T0 + 60)
    assert [c.type for c in back if c.action == "clear"] == [v.PHONE_MONITORING_DEGRADED]
    manual = evaluate(state, [phone(T0 + 120, mode=0)], {}, TH, now=T0 + 120)
    assert opened(manual) == [v.PHONE_MONITORING_DEGRADED]


def test_silence_after_an_online_move_mode_report_is_degraded_before_no_communication():
    state = SubjectState()
    evaluate(state, [phone(T0, mode=2, conn="m")], {}, TH, now=T0)
    quiet, due = tick(state, {}, TH, now=T0 + TH.phone_move_silence_s - 1)
    assert opened(quiet) == [] and due == T0 + TH.phone_move_silence_s + 1
    silent, _ = tick(state, {}, TH, now=T0 + TH.phone_move_silence_s + 1)
    assert opened(silent) == [v.PHONE_MONITORING_DEGRADED]
    assert silent[0].details["reason"] == "silent_in_move_mode"
    back = evaluate(state, [phone(T0 + 2000, mode=2, conn="w")], {}, TH, now=T0 + 2000)
    assert [c.type for c in back if c.action == "clear"] == [v.PHONE_MONITORING_DEGRADED]


def test_silence_in_significant_mode_or_offline_is_only_no_communication():
    for mode, conn in ((1, "w"), (2, "o")):
        state = SubjectState()
        evaluate(state, [phone(T0, mode=mode, conn=conn)], {}, TH, now=T0)
        changes, _ = tick(state, {}, TH, now=T0 + TH.silence_limit_s(60.0) + 1)
        assert opened(changes) == [v.NO_COMMUNICATION]


def test_the_last_will_is_not_communication_and_the_silence_alert_says_when_the_link_went():
    state = SubjectState()
    evaluate(state, [phone(T0, mode=1, conn="w")], {}, TH, now=T0)
    evaluate(state, [phone(T0 + 100, kind="lwt")], {}, TH, now=T0 + 100)
    assert state.devices["p1"].last_heard == T0
    changes, _ = tick(state, {}, TH, now=T0 + TH.silence_limit_s(60.0) + 1)
    assert opened(changes) == [v.NO_COMMUNICATION]
    assert changes[0].details["connection_lost_at"] == T0 + 100


def test_an_older_report_arriving_late_does_not_overwrite_the_phone_state():
    state = SubjectState()
    evaluate(state, [phone(T0 + 60, mode=1)], {}, TH, now=T0 + 60)
    late = evaluate(state, [phone(T0, mode=-1)], {}, TH, now=T0 + 61)
    assert opened(late) == []
