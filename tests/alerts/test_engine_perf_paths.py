"""The engine's cheap paths keep its behaviour: the packed trail (migration 0008) round-trips
exactly, a state written before it is still read whole, and a subject whose state did not change
is not rewritten."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tagwatch.alerts.batch import NewEvents
from tagwatch.alerts.engine import AlertEngine, decode_state, encode_state, pack_trail, unpack_trail
from tagwatch.alerts.rules import TRAIL_FIXES, DeviceState, SubjectState, Track
from tagwatch.alerts.state_codec import encode_document, json_encode
from tagwatch.ingest.decode import engine_fixes
from tagwatch.store.engine_repository import PgEngineRepository
from tests.support import fresh_id, offender_subject


def _fix(device: str, ts: float, seq: int) -> tuple[object, ...]:
    """A row as ingest stores it (FIX_COLUMNS order)."""
    return (device, datetime.fromtimestamp(ts, UTC), seq, -33.9, 18.4, 5.0, *[None] * 5, "gps")


def _state() -> SubjectState:
    return SubjectState(
        tracks={"7/entry": Track(n=2, first=1.5, last=2.5, worst=12.25)},
        devices={"tag-1": DeviceState(expected_interval_s=15.0, last_heard=3.0, last_fix=2.5)},
        beacon_home=True,
        watermark=2.5,
        trail=[
            (1_764_460_000.123456 + k, 18.4123456789 + k * 1e-7, -33.912345678901234, 7.5)
            for k in range(TRAIL_FIXES)
        ],
    )


def test_the_packed_trail_round_trips_exactly() -> None:
    trail = _state().trail
    assert unpack_trail(pack_trail(trail)) == trail
    assert unpack_trail(pack_trail([])) == []
    assert unpack_trail(None) == []


def test_a_state_reads_back_as_the_rules_wrote_it() -> None:
    state = _state()
    doc, packed = encode_state(state)
    assert "trail" not in doc
    assert state.trail, "encoding must not take the trail away from the live state"
    stored = json.loads(json.dumps(doc))  # through the database
    assert decode_state(stored, packed).to_json() == state.to_json()


def test_a_state_written_before_the_packed_trail_is_read_whole() -> None:
    state = _state()
    legacy = json.loads(json.dumps(state.to_json()))
    assert decode_state(legacy, None).to_json() == state.to_json()
    assert decode_state(legacy, pack_trail([(1.0, 2.0, 3.0, 4.0)])).trail == state.trail
    assert decode_state(None, None).to_json() == SubjectState().to_json()


@pytest.mark.integration
def test_only_changed_states_are_written(settings) -> None:
    device = fresh_id("perf")
    now = time.time()
    with psycopg.connect(settings.database_url) as conn:
        sid = offender_subject(conn, device, now - 3600)
        engine = AlertEngine()
        fixes = [_fix(device, now - 30 + i, i) for i in range(3)]
        with conn.transaction():
            engine.process(PgEngineRepository(conn), engine_fixes(fixes), NewEvents())
        text, trail, xmin = conn.execute(
            "SELECT state::text, trail, xmin::text FROM rule_state WHERE subject_id = %s", (sid,)
        ).fetchone()
        conn.commit()
        doc = json.loads(text)
        assert "trail" not in doc
        assert [p[0] for p in unpack_trail(trail)] == [f[1].timestamp() for f in fixes]
        assert doc["watermark"] == fixes[-1][1].timestamp()

        # read and saved again with nothing new: no new row version
        with conn.transaction():
            repo = PgEngineRepository(conn)
            states = engine._lock(repo, [sid])
            engine._save(repo, states, repo.clock_and_speed()[0])
        again = conn.execute(
            "SELECT xmin::text FROM rule_state WHERE subject_id = %s", (sid,)
        ).fetchone()
        assert again is not None and again[0] == xmin

        # a state stored before migration 0008 (trail inside the document) is read and rewritten
        legacy = decode_state(doc, trail).to_json()
        conn.execute(
            "UPDATE rule_state SET state = %s, trail = NULL WHERE subject_id = %s",
            (Jsonb(legacy), sid),
        )
        conn.commit()
        later = [_fix(device, now - 10, 9)]
        with conn.transaction():
            engine.process(PgEngineRepository(conn), engine_fixes(later), NewEvents())
        text, trail = conn.execute(
            "SELECT state::text, trail FROM rule_state WHERE subject_id = %s", (sid,)
        ).fetchone()
        conn.commit()
        assert "trail" not in json.loads(text)
        assert [p[0] for p in unpack_trail(trail)] == [f[1].timestamp() for f in fixes + later]


def test_the_document_encoded_from_the_dataclasses_is_the_documents_json() -> None:
    """`encode_document` writes what `encode_state`'s dict encodes to, byte for byte, for an
    offender's state and a victim's (the victim keys appear only for a victim)."""

    offender = _state()
    offender.devices["tag-1"].episodes["7/entry"] = "e1"
    offender.devices["tag-1"].episode_first["7/entry"] = 1.25
    victim = SubjectState(
        devices={"phone-9": DeviceState(last_fix=4.0)},
        victim=True,
        watchers={"12": [[3, 7], [4, None]]},
        panic=["p1", 1.0, 2.0],
        degraded=None,
    )
    for state in (offender, victim, SubjectState()):
        assert encode_document(state) == json_encode(encode_state(state)[0])
    assert b"watchers" not in encode_document(offender)
