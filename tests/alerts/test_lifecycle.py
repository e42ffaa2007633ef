"""Operators' side of alerts against the real database: open -> acknowledged -> resolved, notes,
who and when in the history, outbox events, and racing operators."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tagwatch.alerts import lifecycle
from tagwatch.alerts.lifecycle import Conflict, Invalid, NotFound
from tagwatch.alerts.rules import AlertChange
from tagwatch.store.engine_repository import apply_changes
from tests.support import fresh_id

pytestmark = pytest.mark.integration


def make_subject(conn: psycopg.Connection, region: str | None = None) -> tuple[int, str]:
    region = region or fresh_id("rg")
    conn.execute(
        "INSERT INTO regions (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (region, region)
    )
    sid = conn.execute(
        "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
        (fresh_id("subject"), region),
    ).fetchone()[0]
    conn.commit()
    return sid, region


def make_alert(conn: psycopg.Connection, sid: int, alert_type: str = "battery_low") -> int:
    """An alert opened the engine's way: row, history 'opened', outbox and deliveries."""
    key = fresh_id(alert_type)
    change = AlertChange(action="open", episode_key=key, type=alert_type, at=time.time())
    assert apply_changes(conn, sid, [change]) == 1
    alert_id = conn.execute(
        "SELECT id FROM alerts WHERE subject_id = %s AND episode_key = %s", (sid, key)
    ).fetchone()[0]
    conn.commit()  # leave the connection idle: lifecycle calls then commit themselves
    return alert_id


def history(conn: psycopg.Connection, alert_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT actor, action, detail, at FROM alert_history WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    ).fetchall()


def events(conn: psycopg.Connection, alert_id: int) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT event, payload->>'status' FROM outbox WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    ).fetchall()


@pytest.fixture
def conn(settings):
    with psycopg.connect(settings.database_url) as connection:
        yield connection


def test_acknowledge_then_resolve_records_who_when_and_notifies(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid)
    before = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()

    acked = lifecycle.acknowledge(conn, alert_id, "op-ann", note="calling the subject")
    assert acked.status == "acknowledged"
    assert acked.changed
    assert acked.acknowledged_by == "op-ann"
    assert acked.acknowledged_at >= before
    resolved = lifecycle.resolve(conn, alert_id, "op-bob", "equipment_fault", "tag replaced")
    assert (resolved.status, resolved.outcome, resolved.resolved_by) == (
        "resolved",
        "equipment_fault",
        "op-bob",
    )
    assert resolved.resolved_at >= acked.acknowledged_at
    assert resolved.acknowledged_by == "op-ann"  # the resolver did not take it over

    rows = history(conn, alert_id)
    assert [(r[0], r[1]) for r in rows] == [
        ("engine", "opened"),
        ("op-ann", "acknowledged"),
        ("op-bob", "resolved"),
    ]
    assert rows[1][2]["implicit"] is False
    assert rows[2][2]["outcome"] == "equipment_fault"
    assert rows[2][2]["from"] == "acknowledged"
    assert all(r[3] >= before for r in rows[1:])
    notes = conn.execute(
        "SELECT id, author, body FROM alert_notes WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()
    assert [(n[1], n[2]) for n in notes] == [
        ("op-ann", "calling the subject"),
        ("op-bob", "tag replaced"),
    ]
    assert rows[1][2]["note_id"] == notes[0][0]
    assert rows[2][2]["note_id"] == notes[1][0]
    stored = conn.execute(
        "SELECT resolution_note, updated_at >= %s FROM alerts WHERE id = %s", (before, alert_id)
    ).fetchone()
    assert stored == ("tag replaced", True)
    # every status change is an outbox event carrying the new status, with its deliveries
    assert events(conn, alert_id) == [
        ("opened", "open"),
        ("acknowledged", "acknowledged"),
        ("resolved", "resolved"),
    ]
    channels = conn.execute(
        "SELECT o.event, d.channel, d.status FROM outbox o JOIN deliveries d"
        " ON d.outbox_id = o.id WHERE o.alert_id = %s ORDER BY o.id",
        (alert_id,),
    ).fetchall()
    assert channels == [
        ("opened", "mqtt", "pending"),
        ("acknowledged", "mqtt", "pending"),
        ("resolved", "mqtt", "pending"),
    ]


def test_resolving_an_open_alert_records_an_implicit_acknowledgement(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid, "gps_lost")
    done = lifecycle.resolve(conn, alert_id, "op-cat", "false_alarm", None)
    assert done.status == "resolved"
    assert done.acknowledged_by == "op-cat"
    assert done.acknowledged_at == done.resolved_at
    rows = history(conn, alert_id)
    assert [(r[0], r[1], r[2].get("implicit")) for r in rows] == [
        ("engine", "opened", None),
        ("op-cat", "acknowledged", True),
        ("op-cat", "resolved", None),
    ]
    assert rows[2][2]["from"] == "open"
    # one status change notified: resolved (the implicit acknowledgement is not an event)
    assert events(conn, alert_id) == [("opened", "open"), ("resolved", "resolved")]
    notes = conn.execute("SELECT count(*) FROM alert_notes WHERE alert_id = %s", (alert_id,))
    assert notes.fetchone()[0] == 0


@pytest.mark.parametrize("alert_type", ["strap_tamper", "case_tamper", "absconder"])
def test_tampers_and_absconders_need_a_note_to_be_resolved(conn, alert_type):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid, alert_type)
    for note in (None, "", "   \n"):
        with pytest.raises(Invalid) as refused:
            lifecycle.resolve(conn, alert_id, "op-dan", "confirmed", note)
        assert refused.value.reason == "note_required"
        assert refused.value.status_code == 422
        assert refused.value.as_detail()["type"] == alert_type
    # refusals change nothing
    status = conn.execute("SELECT status FROM alerts WHERE id = %s", (alert_id,)).fetchone()[0]
    assert status == "open"
    assert [r[1] for r in history(conn, alert_id)] == ["opened"]
    done = lifecycle.resolve(conn, alert_id, "op-dan", "confirmed", "  strap cut, police told  ")
    assert done.status == "resolved"
    note = conn.execute("SELECT resolution_note FROM alerts WHERE id = %s", (alert_id,)).fetchone()[
        0
    ]
    assert note == "strap cut, police told"


def test_other_alerts_resolve_without_a_note_but_need_a_known_outcome(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid, "curfew_violation")
    with pytest.raises(Invalid) as refused:
        lifecycle.resolve(conn, alert_id, "op-eve", "gone fishing", None)
    assert refused.value.reason == "unknown_outcome"
    with pytest.raises(Invalid) as refused:
        lifecycle.resolve(conn, alert_id, "  ", "confirmed", None)
    assert refused.value.reason == "actor_required"
    assert lifecycle.resolve(conn, alert_id, "op-eve", "authorised_absence", None).changed


def test_conflicts_are_clear_errors(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid)
    first = lifecycle.acknowledge(conn, alert_id, "op-fay")
    again = lifecycle.acknowledge(conn, alert_id, "op-fay")  # a retried request: a no-op
    assert not again.changed
    assert again.acknowledged_at == first.acknowledged_at
    with pytest.raises(Conflict) as taken:
        lifecycle.acknowledge(conn, alert_id, "op-gus")
    assert taken.value.reason == "already_acknowledged"
    assert taken.value.status_code == 409
    assert taken.value.as_detail()["acknowledged_by"] == "op-fay"
    lifecycle.resolve(conn, alert_id, "op-fay", "other", None)
    with pytest.raises(Conflict) as twice:
        lifecycle.resolve(conn, alert_id, "op-gus", "confirmed", "me too")
    assert (twice.value.reason, twice.value.status_code) == ("already_resolved", 409)
    with pytest.raises(Conflict) as late:
        lifecycle.acknowledge(conn, alert_id, "op-gus")
    assert late.value.reason == "already_resolved"
    assert [r[1] for r in history(conn, alert_id)] == ["opened", "acknowledged", "resolved"]
    assert len(events(conn, alert_id)) == 3
    with pytest.raises(NotFound) as missing:
        lifecycle.acknowledge(conn, 2**62, "op-gus")
    assert (missing.value.reason, missing.value.status_code) == ("not_found", 404)


def test_notes_go_on_alerts_in_any_status(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid)
    first = lifecycle.add_note(conn, alert_id, "op-hal", "left a voicemail")
    lifecycle.resolve(conn, alert_id, "op-hal", "false_alarm", None)
    second = lifecycle.add_note(conn, alert_id, "tracer-ida", "seen at home later")
    with pytest.raises(Invalid) as blank:
        lifecycle.add_note(conn, alert_id, "op-hal", " ")
    assert blank.value.reason == "empty_note"
    with pytest.raises(Invalid) as huge:
        lifecycle.add_note(conn, alert_id, "op-hal", "x" * 10_001)
    assert huge.value.reason == "note_too_long"
    with pytest.raises(NotFound):
        lifecycle.add_note(conn, 2**62, "op-hal", "nowhere")
    rows = history(conn, alert_id)
    notes = [(r[0], r[2]["note_id"]) for r in rows if r[1] == "note"]
    assert notes == [("op-hal", first), ("tracer-ida", second)]
    # a note is not a status change: nothing notified for it
    assert [e for e, _ in events(conn, alert_id)] == ["opened", "resolved"]


def test_a_lifecycle_change_inside_the_callers_transaction_rolls_back_with_it(conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid)

    def request() -> None:
        with conn.transaction():
            lifecycle.acknowledge(conn, alert_id, "op-jon")
            raise RuntimeError("the API request failed after the change")

    with pytest.raises(RuntimeError):
        request()
    status = conn.execute("SELECT status FROM alerts WHERE id = %s", (alert_id,)).fetchone()[0]
    assert status == "open"
    assert [r[1] for r in history(conn, alert_id)] == ["opened"]
    assert len(events(conn, alert_id)) == 1


def test_a_resolver_waits_for_the_one_holding_the_alert_and_then_sees_it_resolved(settings, conn):
    sid, _ = make_subject(conn)
    alert_id = make_alert(conn, sid)
    outcome: list[object] = []

    def second_operator() -> None:
        with psycopg.connect(settings.database_url) as other:
            try:
                outcome.append(lifecycle.resolve(other, alert_id, "op-lee", "confirmed", None))
            except Conflict as exc:
                outcome.append(exc)

    with conn.transaction():
        lifecycle.resolve(conn, alert_id, "op-kim", "false_alarm", None)
        racer = threading.Thread(target=second_operator)
        racer.start()
        time.sleep(0.5)
        assert racer.is_alive(), "the second resolver did not wait for the row lock"
    racer.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], Conflict)
    assert outcome[0].reason == "already_resolved"
    row = conn.execute(
        "SELECT resolved_by, outcome FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert row == ("op-kim", "false_alarm")


def test_concurrent_double_resolve_exactly_one_succeeds(settings, conn):
    sid, _ = make_subject(conn)
    alert_ids = [make_alert(conn, sid) for _ in range(3)]
    operators = 6
    for alert_id in alert_ids:
        barrier = threading.Barrier(operators)
        results: list[object] = []
        lock = threading.Lock()

        def operator(name: str, alert_id=alert_id, barrier=barrier, results=results, lock=lock):
            with psycopg.connect(settings.database_url) as mine:
                barrier.wait()
                try:
                    result: object = lifecycle.resolve(mine, alert_id, name, "confirmed", "x")
                except Conflict as exc:
                    result = exc
                with lock:
                    results.append(result)

        threads = [threading.Thread(target=operator, args=(f"op-{i}",)) for i in range(operators)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        wins = [r for r in results if isinstance(r, lifecycle.AlertStatus)]
        losses = [r for r in results if isinstance(r, Conflict)]
        assert len(wins) == 1, results
        assert len(losses) == operators - 1
        assert {r.reason for r in losses} == {"already_resolved"}
        actions = [(a, act) for a, act, _, _ in history(conn, alert_id)]
        assert actions.count((wins[0].resolved_by, "resolved")) == 1
        assert [act for _, act in actions].count("resolved") == 1
        assert [e for e, _ in events(conn, alert_id)] == ["opened", "resolved"]


def test_an_operator_declares_an_absconder_once(conn):
    sid, _ = make_subject(conn)
    declared = lifecycle.declare_absconder(conn, sid, "op-max", "missed reporting, not at home")
    assert declared.raised
    row = conn.execute(
        "SELECT type, severity, status, details->>'declared_by' FROM alerts WHERE id = %s",
        (declared.alert_id,),
    ).fetchone()
    assert row == ("absconder", "critical", "open", "op-max")
    assert [(r[0], r[1]) for r in history(conn, declared.alert_id)] == [
        ("op-max", "opened"),
        ("op-max", "declared"),
    ]
    assert events(conn, declared.alert_id) == [("opened", "open")]
    # a second declaration (another operator) lands on the open absconder
    again = lifecycle.declare_absconder(conn, sid, "op-ned", "tracing unit asked")
    assert (again.alert_id, again.raised) == (declared.alert_id, False)
    assert (
        conn.execute(
            "SELECT count(*) FROM alerts WHERE subject_id = %s AND type = 'absconder'", (sid,)
        ).fetchone()[0]
        == 1
    )
    last = history(conn, declared.alert_id)[-1]
    assert (last[0], last[1], last[2]["already_open"]) == ("op-ned", "declared", True)
    with pytest.raises(Invalid) as bare:
        lifecycle.declare_absconder(conn, sid, "op-ned", " ")
    assert bare.value.reason == "note_required"
    with pytest.raises(NotFound):
        lifecycle.declare_absconder(conn, 2**62, "op-ned", "who?")
    with pytest.raises(Invalid):
        lifecycle.resolve(conn, declared.alert_id, "op-max", "traced", None)
    lifecycle.resolve(conn, declared.alert_id, "op-max", "traced", "arrested at the station")
    # once resolved, a new declaration raises a new absconder
    third = lifecycle.declare_absconder(conn, sid, "op-max", "gone again")
    assert third.raised
    assert third.alert_id != declared.alert_id
