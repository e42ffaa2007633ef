"""Assignments bound every rule (issue 14): the real engine over the in-memory repository.

A device is judged for a subject only while the subject holds it: after the assignment ended (or
before it began) the clock rules raise nothing for it, its open device episodes are cleared with
the reason ``assignment_ended``, a swapped tag is forgotten while the new one is watched, and a
tag reused for another subject starts clean there.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tagwatch.alerts import vocabulary as v
from tagwatch.alerts.batch import NewEvents, NewFixes
from tagwatch.alerts.engine import AlertEngine, decode_state, release_held
from tagwatch.alerts.holding import ASSIGNMENT_ENDED, release
from tagwatch.alerts.memory_repository import MemoryEngineRepository
from tagwatch.alerts.ports import Assignment, SubjectRow
from tagwatch.alerts.rules import DeviceState, SubjectState, Track
from tagwatch.ingest.decode import engine_events, engine_fixes

T0 = 1_780_000_000.0
INF = float("inf")
SILENCE = 16 * 60  # 3 x max(60 s, heartbeat 300 s) + 60 s grace


def _fix(device: str, ts: float) -> tuple[object, ...]:
    """A row as ingest stores it (the engine's FIX_* columns)."""
    return (device, datetime.fromtimestamp(ts, UTC), -1, -33.9, 18.4, 5.0, *[None] * 5, "gps")


def _event(device: str, ts: float, kind: str) -> tuple[object, ...]:
    return (device, datetime.fromtimestamp(ts, UTC), -1, kind)


def _repo(*assignments: Assignment) -> MemoryEngineRepository:
    repo = MemoryEngineRepository(now=T0)
    repo.subjects = [SubjectRow(sid, "UTC", (), "za-wc", None, 1) for sid in (1, 2)]
    repo.assignment_rows = list(assignments)
    return repo


def _play(
    engine: AlertEngine, repo: MemoryEngineRepository, device: str, start: float, end: float
) -> None:
    """A fix a minute from ``start`` to ``end``, the clock ticking every 30 s to ``end``."""
    t = start
    while t < end:
        repo.now = t
        engine.process(repo, engine_fixes([_fix(device, t)]), NewEvents())
        engine.tick(repo)
        repo.now = t + 30
        engine.tick(repo)
        t += 60


def _run_clock(engine: AlertEngine, repo: MemoryEngineRepository, until: float) -> None:
    t = repo.now
    while t <= until:
        repo.now = t
        engine.tick(repo)
        t += 30


def _alerts(repo: MemoryEngineRepository, alert_type: str, device: str) -> list[object]:
    return [a for a in repo.alerts if a.type == alert_type and a.device_id == device]


def test_silence_after_the_assignment_ended_raises_nothing() -> None:
    end = T0 + 600
    repo = _repo(Assignment("tag-a", 1, "offender", T0 - 3600, end, 60))
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, end)
    _run_clock(engine, repo, end + 3 * SILENCE)
    assert repo.alerts == []
    row = repo.read_state(1)
    assert row is not None
    assert decode_state(row.doc, row.trail).devices == {}, "the ended device is released"


def test_the_control_without_an_end_does_raise_no_communication() -> None:
    repo = _repo(Assignment("tag-a", 1, "offender", T0 - 3600, INF, 60))
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, T0 + 600)
    _run_clock(engine, repo, T0 + 600 + 2 * SILENCE)
    assert len(_alerts(repo, v.NO_COMMUNICATION, "tag-a")) == 1


def test_an_open_device_alert_is_cleared_at_the_end_with_its_reason() -> None:
    """Silent, alerted, then the officer records the tag taken off: the alert is cleared (not
    resolved: it stays for an operator) at the end, and never escalates to an absconder."""
    repo = _repo(Assignment("tag-a", 1, "offender", T0 - 3600, INF, 60))
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, T0 + 120)
    _run_clock(engine, repo, T0 + 120 + SILENCE + 60)
    (alert,) = _alerts(repo, v.NO_COMMUNICATION, "tag-a")
    end = repo.now + 60  # recorded ahead: the store's end_assignment, then its release
    repo.assignment_rows = [Assignment("tag-a", 1, "offender", T0 - 3600, end, 60)]
    assert release_held(repo, 1, end) == 0, "still held: nothing released yet"
    _run_clock(engine, repo, end + 4 * 3600)
    assert end <= alert.cleared_at <= end + 30  # type: ignore[attr-defined]  # the next tick
    assert alert.status == "open"  # type: ignore[attr-defined]
    cleared = [h for h in repo.history if h[0] == alert.alert_id and h[2] == "cleared"]  # type: ignore[attr-defined]
    assert cleared and cleared[0][3]["reason"] == ASSIGNMENT_ENDED
    assert not [a for a in repo.alerts if a.type == v.ABSCONDER]


def test_ending_now_clears_at_once() -> None:
    repo = _repo(Assignment("tag-a", 1, "offender", T0 - 3600, INF, 60))
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, T0 + 120)
    _run_clock(engine, repo, T0 + 120 + SILENCE + 60)
    (alert,) = _alerts(repo, v.NO_COMMUNICATION, "tag-a")
    repo.assignment_rows = [Assignment("tag-a", 1, "offender", T0 - 3600, T0 + 150, 60)]
    assert release_held(repo, 1, T0 + 150) == 1
    assert alert.cleared_at == repo.now  # type: ignore[attr-defined]  # when it was released


def test_a_swapped_tag_is_forgotten_and_the_new_one_watched() -> None:
    swap = T0 + 600
    repo = _repo(
        Assignment("tag-old", 1, "offender", T0 - 3600, swap, 60),
        Assignment("tag-new", 1, "offender", swap, INF, 60),
    )
    engine = AlertEngine()
    _play(engine, repo, "tag-old", T0, swap)
    _play(engine, repo, "tag-new", swap, swap + 1200)
    _run_clock(engine, repo, swap + 1200 + 2 * SILENCE)
    assert not _alerts(repo, v.NO_COMMUNICATION, "tag-old")
    assert len(_alerts(repo, v.NO_COMMUNICATION, "tag-new")) == 1, "the new tag is monitored"


def test_an_upload_from_the_held_period_is_judged_then_released() -> None:
    """Stored fixes from before the end arrive after it: they count for the subject (they are
    its), and the device's state does not outlive the assignment."""
    end = T0 + 600
    repo = _repo(Assignment("tag-a", 1, "offender", T0 - 3600, end, 60))
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, T0 + 300)
    repo.now = end + 120
    engine.process(
        repo, engine_fixes([_fix("tag-a", T0 + 400), _fix("tag-a", T0 + 460)]), NewEvents()
    )
    row = repo.read_state(1)
    assert row is not None
    state = decode_state(row.doc, row.trail)
    assert state.devices == {}
    assert state.watermark == T0 + 460, "the upload was the subject's"
    _run_clock(engine, repo, end + 3 * SILENCE)
    assert repo.alerts == []


def test_a_device_in_stock_never_alerts() -> None:
    repo = _repo()
    engine = AlertEngine()
    _play(engine, repo, "tag-stock", T0, T0 + 600)
    repo.now = T0 + 600
    engine.process(repo, NewFixes(), engine_events([_event("tag-stock", T0 + 600, "strap_tamper")]))
    _run_clock(engine, repo, T0 + 600 + 2 * SILENCE)
    assert repo.alerts == []
    assert repo.states == {}


def test_an_assignment_that_has_not_begun_is_not_judged() -> None:
    """A tag reported under an earlier assignment and is booked again for later: in between,
    its silence is nobody's."""
    repo = _repo(
        Assignment("tag-a", 1, "offender", T0 - 3600, T0 + 600, 60),
        Assignment("tag-a", 1, "offender", T0 + 6 * 3600, INF, 60),
    )
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, T0 + 600)
    _run_clock(engine, repo, T0 + 5 * 3600)
    assert repo.alerts == []


def test_a_tag_whose_clock_runs_ahead_is_not_released_at_its_start() -> None:
    """Ingest accepts fixes up to five minutes ahead: a tamper at the start of an assignment,
    stamped a minute before the rule clock gets there, stays open."""
    repo = _repo(Assignment("tag-a", 1, "offender", T0 + 60, INF, 60))
    engine = AlertEngine()
    engine.process(
        repo,
        engine_fixes([_fix("tag-a", T0 + 70)]),
        engine_events([_event("tag-a", T0 + 75, "strap_tamper")]),
    )
    engine.tick(repo)
    (tamper,) = _alerts(repo, v.STRAP_TAMPER, "tag-a")
    assert tamper.cleared_at is None  # type: ignore[attr-defined]
    row = repo.read_state(1)
    assert row is not None and "tag-a" in decode_state(row.doc, row.trail).devices


def test_a_tag_reused_for_another_subject_starts_clean() -> None:
    reuse = T0 + 600
    repo = _repo(
        Assignment("tag-a", 1, "offender", T0 - 3600, reuse, 60),
        Assignment("tag-a", 2, "offender", reuse + 60, INF, 60),
    )
    engine = AlertEngine()
    _play(engine, repo, "tag-a", T0, reuse)
    repo.now = reuse + 300
    engine.process(repo, engine_fixes([_fix("tag-a", reuse + 300)]), NewEvents())
    engine.tick(repo)
    old, new = repo.read_state(1), repo.read_state(2)
    assert old is not None and new is not None
    assert decode_state(old.doc, old.trail).devices == {}
    fresh = decode_state(new.doc, new.trail)
    assert [p[0] for p in fresh.trail] == [reuse + 300], "no trail from the previous holder"
    assert fresh.watermark == reuse + 300
    _run_clock(engine, repo, reuse + 300 + 2 * SILENCE)
    assert [a.subject_id for a in repo.alerts] == [2], "only the new holder's silence counts"


def test_release_clears_zone_episodes_only_when_the_subject_holds_nothing() -> None:
    def state() -> SubjectState:
        return SubjectState(
            tracks={"7/exit": Track(episode="inclusion_zone_exit:z7:1000", opened=1.0, count=4)},
            devices={
                "tag-a": DeviceState(
                    episodes={v.STRAP_TAMPER: "strap_tamper:dtag-a:2000"},
                    episode_first={v.STRAP_TAMPER: 2.0},
                )
            },
        )

    ended = [Assignment("tag-a", 1, "offender", 0.0, 50.0, 60)]
    swapped = [*ended, Assignment("tag-b", 1, "offender", 50.0, INF, 60)]
    s1 = state()
    changes = release(s1, 1, ended, 100.0)
    assert [(c.action, c.type, c.at) for c in changes] == [
        ("clear", v.STRAP_TAMPER, 100.0),
        ("clear", v.INCLUSION_EXIT, 100.0),
    ]
    assert all(c.details["reason"] == ASSIGNMENT_ENDED for c in changes)
    assert s1.devices == {} and s1.tracks == {}
    s2 = state()
    changes = release(s2, 1, swapped, 100.0)
    assert [c.type for c in changes] == [v.STRAP_TAMPER]
    assert "7/exit" in s2.tracks, "a swap keeps the subject's zone episodes"
    s3 = state()
    assert release(s3, 1, [Assignment("tag-a", 1, "offender", 0.0, INF, 60)], 100.0) == []
    assert "tag-a" in s3.devices
