"""Refused input is bounded: a dead letter keeps a 4 KiB prefix with the length and SHA-256 of the
whole payload, the same bad message is one row with a repeat count (a redelivery is not stored
twice), and beyond a per-sender limit refused messages are only counted, never a good fix lost.
And the byte budget that bounds ingest's memory: a full budget makes the network thread wait."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tagwatch.ingest.decode import DeadLetter, Decoded, Origin
from tagwatch.ingest.service import ByteBudget
from tagwatch.store.ingest_writer import DeadLetterPolicy, prepare_session, write_batch
from tests.support import connect, count, fresh_id, publish_all, stored_fixes, wait_for

pytestmark = pytest.mark.integration


def _fix(ts: float, seq: int) -> bytes:
    return json.dumps({"ts": ts, "lat": 40.7, "lon": -74.0, "acc": 9, "seq": seq}).encode()


@pytest.fixture(scope="module")
def limited_ingest(service_env, tmp_path_factory):
    """An ingest that stores at most 5 dead letters per sender and minute."""
    from tests.conftest import IngestProcess

    process = IngestProcess(service_env, fresh_id("ingest-dl"), tmp_path_factory.mktemp("log"))
    process.env["TAGWATCH_DEAD_LETTERS_PER_DEVICE_MINUTE"] = "5"
    process.start_and_wait()
    yield process
    process.end()


def test_a_large_bad_payload_keeps_a_prefix_its_length_and_digest(
    settings, provision, limited_ingest
):
    device_id = fresh_id("big")
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
    bad = b"{" + b"x" * (200 * 1024)
    publish_all(device, [(f"em/v1/{device_id}/fix", bad)])
    device.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM dead_letters WHERE sender = %s",
                (device_id,),
            )
            == 1
        )
    ), limited_ingest.log()[-2000:]
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT reason, payload, payload_length, payload_sha256 FROM dead_letters"
            " WHERE sender = %s",
            (device_id,),
        ).fetchone()
    assert row[0] == "malformed_json"
    assert bytes(row[1]) == bad[:4096]
    assert row[2] == len(bad)
    assert bytes(row[3]) == hashlib.sha256(bad).digest()


def test_beyond_the_per_sender_limit_bad_input_is_counted_and_good_fixes_all_stored(
    settings, provision, limited_ingest
):
    device_id = fresh_id("noisy")
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
    topic = f"em/v1/{device_id}/fix"
    now = time.time()
    messages: list[tuple[str, bytes]] = []
    for i in range(20):
        messages.append((topic, b'{"garbage": %d' % i))  # distinct, so none is a repeat
        messages.append((topic, _fix(now - 60 + i, i)))
    messages.append((topic, b'{"garbage": 0'))  # the first one again: a repeat of a stored one
    publish_all(device, messages)
    device.disconnect()

    def tally() -> tuple[int, int]:
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(total), 0), coalesce(sum(not_stored), 0)"
                " FROM dead_letter_tally WHERE sender = %s",
                (device_id,),
            ).fetchone()
        return int(row[0]), int(row[1])

    assert wait_for(lambda: tally()[0] == 21), limited_ingest.log()[-2000:]
    assert wait_for(lambda: stored_fixes(settings.database_url, device_id) == 20)
    with psycopg.connect(settings.database_url) as conn:
        rows, stored = conn.execute(
            "SELECT count(*), coalesce(sum(repeats), 0) FROM dead_letters WHERE sender = %s",
            (device_id,),
        ).fetchone()
    total, not_stored = tally()
    print(f"\n21 refused: {rows} rows ({stored} with repeats) stored, {not_stored} only counted")
    # 5 a minute; the burst may straddle a minute boundary, so at most two windows' worth
    assert 5 <= stored <= 10
    assert stored + not_stored == total == 21


def test_the_same_bad_message_written_twice_is_one_row_with_two_repeats(settings):
    """What a broker redelivery after a crash between commit and acknowledgement amounts to."""
    sender = fresh_id("redeliver")
    topic = f"em/v1/{sender}/fix"
    payload = b"not json " + sender.encode()
    with psycopg.connect(settings.database_url) as conn:
        prepare_session(conn)
        for _ in range(2):
            decoded = Decoded()
            decoded.refuse(topic, payload, "malformed_json", "expected JSON")
            write_batch(conn, fresh_id("w"), decoded, {}, DeadLetterPolicy())
        rows = conn.execute(
            "SELECT repeats, last_received_at IS NOT NULL FROM dead_letters WHERE sender = %s",
            (sender,),
        ).fetchall()
        totals = conn.execute(
            "SELECT total, not_stored FROM dead_letter_tally WHERE sender = %s", (sender,)
        ).fetchall()
    assert rows == [(2, True)]
    assert totals == [(2, 0)]


def test_a_fix_before_the_current_assignment_is_refused_in_the_writers_transaction(settings):
    device = fresh_id("floor")
    with psycopg.connect(settings.database_url) as conn:
        prepare_session(conn)
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute("INSERT INTO regions (id, name) VALUES ('dl-r', 'dl') ON CONFLICT DO NOTHING")
        subject = conn.execute(
            "INSERT INTO subjects (name, region_id) VALUES ('floor', 'dl-r') RETURNING id"
        ).fetchone()[0]
        start = datetime.fromtimestamp(time.time() - 3600, UTC)
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, subject, start),
        )
        conn.commit()
        decoded = Decoded()
        topic = f"em/v1/{device}/fix"
        for seq, age in ((1, 7200), (2, 60)):
            ts = datetime.fromtimestamp(time.time() - age, UTC)
            row = (device, ts, seq, 1.0, 2.0, 5.0, None, None, None, None, None, "gps")
            decoded.add_fix(row, Origin(topic, _fix(ts.timestamp(), seq), ""))
        result = write_batch(conn, fresh_id("w"), decoded, {})
        seqs = conn.execute("SELECT seq FROM fixes WHERE device_id = %s", (device,)).fetchall()
        dead = conn.execute(
            "SELECT reason, payload FROM dead_letters WHERE sender = %s", (device,)
        ).fetchall()
    assert result.before_assignment == 1
    assert seqs == [(2,)]
    assert [r[0] for r in dead] == ["before_assignment"]
    assert json.loads(bytes(dead[0][1]))["seq"] == 1


def test_the_byte_budget_makes_the_network_thread_wait_and_never_wedges():
    budget = ByteBudget(1000)
    stop = threading.Event()
    budget.take(600, stop)
    budget.take(300, stop)
    waited = threading.Event()

    def third() -> None:
        budget.take(400, stop)  # 1300 > 1000: waits for room
        waited.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not waited.wait(0.5)
    budget.give_back(600)
    assert waited.wait(2)
    thread.join()
    assert budget.held == 700
    budget.give_back(700)
    budget.take(5000, stop)  # larger than the whole budget: passes alone
    assert budget.held == 5000 and budget.peak == 5000


def test_dead_letters_survive_as_dataclasses_with_their_sender():
    letter = DeadLetter("owntracks/alice/phone", b"x", "malformed_json", "")
    assert letter.sender == "owntracks/alice"
