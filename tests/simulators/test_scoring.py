"""The scorer on hand-made cases, and the naive baseline on the library's traces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tagwatch.simulators.scenario import AlertRule, Expectation
from tagwatch.simulators.scoring import (
    RaisedAlert,
    format_scorecards,
    naive_alerts,
    score,
    score_run,
    to_scenario_time,
)

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


CURFEW = Expectation("curfew_violation", "sipho", at(0), at(15), within_s=240.0)
LATE_ENTRY = Expectation("exclusion_zone_entry", "sipho", at(30), at(45), late=True)


def test_an_alert_in_its_window_matches_with_its_detection_delay():
    raised = [RaisedAlert("curfew_violation", "sipho", at(3), first_fix_at=at(1))]
    card = score([CURFEW], [], [], raised, scenario="s")
    assert (card.expected, card.raised, len(card.matched), card.missed, card.false) == (
        1,
        1,
        1,
        (),
        (),
    )
    assert card.matched[0].delay_s == 120.0 and not card.slow and card.passed


def test_without_a_proving_fix_the_delay_counts_from_the_window_start():
    card = score([CURFEW], [], [], [RaisedAlert("curfew_violation", "sipho", at(5))])
    assert card.delays_s == [300.0]
    assert card.slow  # 5 minutes, over its 4-minute budget
    assert not card.passed


def test_one_alert_per_episode_a_second_one_is_false():
    raised = [
        RaisedAlert("curfew_violation", "sipho", at(2)),
        RaisedAlert("curfew_violation", "sipho", at(9)),
    ]
    card = score([CURFEW], [], [], raised)
    assert len(card.matched) == 1 and len(card.false) == 1
    assert card.false_ratio == 0.5


def test_wrong_type_subject_or_time_is_missed_and_false():
    raised = [
        RaisedAlert("curfew_violation", "someone_else", at(2)),
        RaisedAlert("exclusion_zone_entry", "sipho", at(2)),
        RaisedAlert("curfew_violation", "sipho", at(20)),
    ]
    card = score([CURFEW], [], [], raised)
    assert card.missed == (CURFEW,) and len(card.false) == 3


def test_a_late_expectation_needs_an_alert_marked_late():
    on_time = RaisedAlert("exclusion_zone_entry", "sipho", at(100), first_fix_at=at(35))
    assert score([LATE_ENTRY], [], [], [on_time]).missed == (LATE_ENTRY,)
    late = RaisedAlert("exclusion_zone_entry", "sipho", at(100), late=True, first_fix_at=at(35))
    card = score([LATE_ENTRY], [], [], [late])
    assert len(card.matched) == 1 and card.matched[0].delay_s == 65 * 60


def test_forbidden_alerts_are_false_and_named_allowed_ones_are_tolerated():
    forbid = AlertRule(frozenset({"curfew_violation"}), "sipho", at(20), at(600))
    allow = AlertRule(frozenset({"exclusion_zone_warning"}), None, at(0), at(600))
    anything = AlertRule(None, "sipho", at(0), at(600))
    raised = [
        RaisedAlert("curfew_violation", "sipho", at(60)),
        RaisedAlert("exclusion_zone_warning", "sipho", at(61)),
        RaisedAlert("battery_low", "sipho", at(62)),
    ]
    card = score([], [forbid], [allow], raised)
    assert [a.type for a in card.forbidden] == ["curfew_violation"]
    assert [a.type for a in card.tolerated] == ["exclusion_zone_warning"]
    assert [a.type for a in card.false] == ["curfew_violation", "battery_low"]
    assert len(score([], [anything], [], raised).forbidden) == 3


def test_score_run_maps_platform_subject_ids_and_fresh_names(library_runs):
    run = library_runs["curfew-breach"]
    expectation = run.expectations[0]
    subject = run.plan.subjects[0]
    proof = expectation.after + timedelta(minutes=1)
    by_id = RaisedAlert("curfew_violation", "42", proof + timedelta(minutes=2), first_fix_at=proof)
    by_name = RaisedAlert("curfew_violation", subject.name, proof, first_fix_at=proof)
    assert len(score_run(run, [by_id], {"42": subject.key}).matched) == 1
    assert len(score_run(run, [by_name]).matched) == 1


def test_compressed_server_times_map_back_to_the_scenario_clock():
    wall0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    mapped = to_scenario_time(wall0 + timedelta(seconds=30), wall0, T, speedup=120.0)
    assert mapped == T + timedelta(hours=1)


def test_the_naive_baseline_floods_the_drift_night_with_false_curfew_alerts(library_runs):
    run = library_runs["drift-at-home"]
    naive = naive_alerts(run)
    card = score_run(run, naive)
    assert card.raised >= 10 and len(card.false) == card.raised
    assert {a.type for a in naive} == {"curfew_violation"}
    assert score_run(run, []).passed  # a platform that raises nothing is right here


def test_the_naive_baseline_finds_the_real_violations_too(library_runs):
    for name in ("exclusion-entry", "strap-cut-flight", "battery-death", "inclusion-exit"):
        run = library_runs[name]
        card = score_run(run, naive_alerts(run))
        missed = {e.alert for e in card.missed}
        assert missed <= {"absconder"}, (name, missed)


def test_the_naive_baseline_marks_uploads_late_and_times_out_dozing_phones(library_runs):
    late = [a for a in naive_alerts(library_runs["coverage-gap-late"]) if a.late]
    assert late and all(a.opened_at - a.evidence_at > timedelta(minutes=5) for a in late)
    entry = next(a for a in late if a.type == "exclusion_zone_entry")
    assert entry.opened_at - entry.evidence_at > timedelta(hours=1)
    phone = naive_alerts(library_runs["phone-monitored"])
    assert sum(a.type == "no_communication" for a in phone) >= 5


def test_the_naive_baseline_sees_entries_on_the_near_miss(library_runs):
    run = library_runs["exclusion-near-miss"]
    card = score_run(run, naive_alerts(run))
    assert [a.type for a in card.forbidden].count("exclusion_zone_entry") >= 1


def test_scorecards_print_side_by_side_with_the_naive_baseline(library_runs):
    runs = [library_runs[n] for n in ("curfew-breach", "drift-at-home")]
    platform = [score_run(run, []) for run in runs]
    naive = [score_run(run, naive_alerts(run)) for run in runs]
    table = format_scorecards(platform, naive)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["scenario", "expected", "raised"]
    assert lines[1].startswith("curfew-breach") and lines[3].startswith("total")
    assert "naive baseline" in lines[-1] and "platform 0/0" in lines[-1]
