"""Decoded rule states kept between batches (alerts/state_cache.py): used only while the row is
the version the engine wrote, never after another writer, a rollback or an uncommitted batch, and
an engine using them writes exactly what an engine decoding every row writes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tagwatch.alerts.batch import NewEvents
from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.ports import StateRow
from tagwatch.alerts.rules import SubjectState
from tagwatch.alerts.state_cache import StateCache
from tagwatch.ingest.decode import engine_fixes
from tagwatch.store.engine_repository import PgEngineRepository
from tests.support import fresh_id, offender_subject


def _row(sid: int, version: str | None = None) -> StateRow:
    return StateRow(sid, {}, None, None, version)


def test_a_kept_state_is_handed_out_once_and_only_at_its_version() -> None:
    cache = StateCache(10)
    state = SubjectState(watermark=1.0)
    cache.stage(1, "100", state, _row(1, "100"))
    assert cache.versions([1, 2]) == {}, "staged is not yet committed"
    cache.committed()
    assert cache.versions([1, 2]) == {1: "100"}
    kept = cache.take(1, "100")
    assert kept is not None and kept.state is state
    assert cache.take(1, "100") is None, "taken out: the rules own it now"
    cache.stage(1, "101", state, _row(1, "101"))
    cache.committed()
    assert cache.take(1, "100") is None, "another version: never the kept state"
    assert cache.versions([1]) == {}, "and it is gone"


def test_dropping_an_entry_removes_it_and_counts_neither_hit_nor_miss() -> None:
    """The clock reads its due rows whole: the kept state it no longer matches is dropped, and
    the hit/miss figures (the worker's log) count only the batches' reads."""
    cache = StateCache(10)
    for sid in (1, 2):
        cache.stage(sid, str(sid), SubjectState(), _row(sid, str(sid)))
    cache.committed()
    cache.drop(1)
    cache.drop(3)  # nothing held: nothing to do
    assert cache.versions([1, 2, 3]) == {2: "2"}
    assert len(cache) == 1
    assert (cache.hits, cache.misses) == (0, 0)
    assert cache.take(1, "1") is None, "gone"
    assert (cache.hits, cache.misses) == (0, 1)


def test_a_rollback_or_a_batch_without_a_commit_keeps_nothing() -> None:
    cache = StateCache(10)
    cache.stage(1, "7", SubjectState(), _row(1, "7"))
    cache.discarded()
    cache.committed()
    assert len(cache) == 0
    cache.stage(2, "8", SubjectState(), _row(2, "8"))
    cache.begin()  # the next batch started without the word that this one committed
    cache.committed()
    assert len(cache) == 0
    cache.stage(3, None, SubjectState(), _row(3))  # version unknown: not kept
    cache.committed()
    assert len(cache) == 0
    off = StateCache(0)
    off.stage(4, "9", SubjectState(), _row(4, "9"))
    off.committed()
    assert len(off) == 0


def test_a_full_cache_keeps_whom_it_holds_and_admits_no_newcomer() -> None:
    cache = StateCache(3)
    for sid in (1, 2, 3):
        cache.stage(sid, str(sid), SubjectState(), _row(sid, str(sid)))
    cache.committed()
    kept = cache.take(1, "1")
    assert kept is not None
    cache.stage(1, "11", kept.state, _row(1, "11"))  # 1 evaluated again: back in its place
    cache.stage(4, "4", SubjectState(), _row(4, "4"))  # a newcomer while full: not kept
    cache.committed()
    assert cache.versions([1, 2, 3, 4]) == {1: "11", 2: "2", 3: "3"}
    assert cache.take(2, "20") is None  # another writer changed 2: its place is free
    cache.stage(4, "4", SubjectState(), _row(4, "4"))
    cache.committed()
    assert set(cache.versions([1, 2, 3, 4])) == {1, 3, 4}


def _fix(device: str, ts: float, seq: int, lat: float = -33.9) -> tuple[object, ...]:
    """A row as ingest stores it (FIX_COLUMNS order)."""
    return (device, datetime.fromtimestamp(ts, UTC), seq, lat, 18.4, 5.0, *[None] * 5, "gps")


def _batch(conn: psycopg.Connection, engine: AlertEngine, fixes: list[tuple[object, ...]]) -> None:
    """As ingest does it: the batch's transaction, then the word that it committed."""
    with conn.transaction():
        engine.process(PgEngineRepository(conn), engine_fixes(fixes), NewEvents())
    engine.state_cache.committed()


def _stored(conn: psycopg.Connection, sid: int) -> tuple[dict[str, object], bytes, str]:
    text, trail, xmin = conn.execute(
        "SELECT state::text, trail, xmin::text FROM rule_state WHERE subject_id = %s", (sid,)
    ).fetchone()
    conn.commit()
    return json.loads(text), bytes(trail), xmin


@pytest.mark.integration
def test_kept_states_are_used_only_while_the_row_is_unchanged(settings) -> None:
    now = time.time()
    cached, plain = fresh_id("kept"), fresh_id("read")
    with (
        psycopg.connect(settings.database_url) as conn,
        psycopg.connect(settings.database_url, autocommit=True) as other,
    ):
        subject = {
            cached: offender_subject(conn, cached, now - 3600),
            plain: offender_subject(conn, plain, now - 3600),
        }
        engine, reference = AlertEngine(), AlertEngine()
        engine.state_cache = StateCache(100)

        def both(fixes_of: list[tuple[float, int, float]]) -> None:
            _batch(conn, engine, [_fix(cached, ts, seq, lat) for ts, seq, lat in fixes_of])
            _batch(conn, reference, [_fix(plain, ts, seq, lat) for ts, seq, lat in fixes_of])

        def canonical(doc: dict[str, object], device: str) -> str:
            """The document with its device named alike and the clock's own readings (when the
            engine ran: at or after ``now``; every fix is older) as one token."""
            clock = json.dumps(
                doc,
                sort_keys=True,
                default=str,
            )
            return json.dumps(
                json.loads(clock, parse_float=lambda x: "NOW" if float(x) >= now else x),
                sort_keys=True,
            ).replace(device, "D")

        def same_rows() -> str:
            doc, trail, xmin = _stored(conn, subject[cached])
            ref_doc, ref_trail, _ = _stored(conn, subject[plain])
            assert canonical(doc, cached) == canonical(ref_doc, plain)
            assert trail == ref_trail
            return xmin

        both([(now - 60 + i, i, -33.9) for i in range(3)])
        xmin = same_rows()
        assert engine.state_cache.versions([subject[cached]]) == {subject[cached]: xmin}

        both([(now - 50, 3, -33.9001)])  # the row is the one it wrote: kept, not decoded
        assert engine.state_cache.hits == 1
        same_rows()

        # another writer (the API ending an assignment, a second worker) changes the row
        other.execute(
            "UPDATE rule_state SET state = jsonb_set(state, '{watermark}', to_jsonb(%s::float8))"
            " WHERE subject_id = ANY(%s)",
            (now - 45, [subject[cached], subject[plain]]),
        )
        misses = engine.state_cache.misses
        both([(now - 40, 4, -33.9002)])
        assert engine.state_cache.misses == misses + 1, "read again, never the kept state"
        assert engine.state_cache.hits == 1
        same_rows()

        # a batch rolled back after the engine wrote: its state never becomes a kept one
        def failing_batch() -> None:
            with conn.transaction():
                engine.process(
                    PgEngineRepository(conn),
                    engine_fixes([_fix(cached, now - 30, 5)]),
                    NewEvents(),
                )
                raise RuntimeError("the batch failed after the engine")

        with pytest.raises(RuntimeError):
            failing_batch()
        engine.state_cache.discarded()
        assert engine.state_cache.versions([subject[cached]]) == {}
        hits = engine.state_cache.hits
        both([(now - 20, 6, -33.9003)])
        assert engine.state_cache.hits == hits
        same_rows()


@pytest.mark.integration
def test_a_change_only_to_a_devices_episodes_is_written(settings) -> None:
    """The rules mutate a device's episode maps in place: the document that was read (or kept)
    must not share them, or the "nothing changed" test would skip the write and lose it."""
    now = time.time()
    with psycopg.connect(settings.database_url) as conn:
        for capacity in (0, 10):
            device = fresh_id("episodes")
            sid = offender_subject(conn, device, now - 3600)
            engine = AlertEngine()
            engine.state_cache = StateCache(capacity)
            repo = PgEngineRepository(conn)
            with conn.transaction():
                states = engine._lock(repo, [sid])
                states[sid].device(device).last_msg = now - 5
                engine._save(repo, states, now)  # the row as the engine writes it
            engine.state_cache.committed()
            for round_ in range(2):  # read back (decoded; then kept when the cache is on)
                with conn.transaction():
                    states = engine._lock(repo, [sid])
                    states[sid].devices[device].episodes[f"k{round_}"] = f"episode {round_}"
                    engine._save(repo, states, now)
                engine.state_cache.committed()
                doc, _, _ = _stored(conn, sid)
                assert doc["devices"][device]["episodes"] == {
                    f"k{r}": f"episode {r}" for r in range(round_ + 1)
                }, capacity
