"""The decoder alone, no broker: the contract's cases in milliseconds."""

from __future__ import annotations

import json

import pytest

from tagwatch.alerts import vocabulary
from tagwatch.ingest import decode
from tagwatch.ingest.decode import Decoded, DeviceInfo, Limits
from tagwatch.ingest.routing import decode_message

NOW = 1_800_000_000.0
TAG = DeviceInfo("t1", "tag", None)
PHONE = DeviceInfo("p1", "phone", "owntracks/u/p1")


def _decode(topic: str, payload: bytes | dict) -> Decoded:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    out = Decoded()
    decode_message(
        topic,
        raw,
        NOW,
        lambda d: {"t1": TAG, "p1": PHONE}.get(d),
        lambda t: PHONE if t == "owntracks/u/p1" else None,
        Limits(),
        out,
    )
    return out


def test_single_fix_with_rfc3339_time_and_optional_fields():
    out = _decode(
        "em/v1/t1/fix",
        {
            "ts": "2027-01-15T08:00:00+02:00",
            "lat": -33.9,
            "lon": 18.4,
            "acc": 7,
            "seq": 4,
            "spd": 1.2,
            "sats": 9,
            "src": "wifi",
        },
    )
    assert not out.dead
    (row,) = out.fixes
    assert row[1].isoformat() == "2027-01-15T06:00:00+00:00"
    assert row[2] == 4 and row[11] == "wifi" and row[9] == 9


def test_missing_seq_is_stored_as_minus_one():
    out = _decode("em/v1/t1/fix", {"ts": NOW, "lat": 1, "lon": 2, "acc": 3})
    assert out.fixes[0][2] == -1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "malformed_json"),
        (b"[1, 2]", "schema_violation"),
        ({"ts": NOW, "lat": 1, "lon": 2}, "schema_violation"),
        ({"ts": NOW, "lat": True, "lon": 2, "acc": 1}, "schema_violation"),
        ({"ts": NOW, "lat": 1, "lon": 181, "acc": 1}, "coordinates_out_of_range"),
        ({"ts": NOW + 3600, "lat": 1, "lon": 2, "acc": 1}, "timestamp_in_future"),
        ({"ts": "yesterday", "lat": 1, "lon": 2, "acc": 1}, "timestamp_invalid"),
        ({"ts": NOW, "lat": 1, "lon": 2, "acc": 1, "src": "psychic"}, "schema_violation"),
        ({"ts": NOW, "lat": 1, "lon": 2, "acc": 1, "seq": -3}, "value_out_of_range"),
    ],
)
def test_refused_fixes(payload, reason):
    out = _decode("em/v1/t1/fix", payload)
    assert not out.fixes
    assert [d.reason for d in out.dead] == [reason]


def test_oversize_and_topic_cases():
    assert _decode("em/v1/t1/fix", b" " * (256 * 1024 + 1)).dead[0].reason == "payload_too_large"
    assert _decode("em/v1/zz/fix", {"ts": NOW}).dead[0].reason == "unknown_device"
    assert _decode("em/v1/p1/fix", {"ts": NOW}).dead[0].reason == "topic_mismatch"
    assert _decode("em/v1/t1/gossip", {}).dead[0].reason == "unknown_topic"
    assert _decode("em/v1/t1/status", b"sleepy").dead[0].reason == "invalid_status"


def test_events_single_and_batched():
    out = _decode(
        "em/v1/t1/event",
        {"events": [{"ts": NOW, "type": "strap_tamper"}, {"ts": NOW, "type": "teleported"}]},
    )
    assert [e[3] for e in out.events] == ["strap_tamper"]
    assert [d.reason for d in out.dead] == ["unknown_event_type"]


def test_owntracks_location_converts_speed_and_lwt_goes_offline():
    out = _decode(
        "owntracks/u/p1",
        {
            "_type": "location",
            "lat": 1,
            "lon": 2,
            "tst": int(NOW),
            "acc": 20,
            "vel": 72,
            "tid": "p1",
        },
    )
    assert out.fixes[0][7] == pytest.approx(20.0)  # 72 km/h = 20 m/s
    assert _decode("owntracks/u/p1", {"_type": "lwt", "tst": 1}).statuses == [
        ("p1", "offline", "owntracks_lwt")
    ]
    assert _decode("owntracks/u/p1", {"_type": "what"}).dead[0].reason == (
        "unsupported_message_type"
    )


def test_a_fix_older_than_the_longest_store_and_forward_is_too_late():
    week = 7 * 86400
    kept = _decode("em/v1/t1/fix", {"ts": NOW - week + 60, "lat": 1, "lon": 2, "acc": 3})
    assert len(kept.fixes) == 1 and not kept.dead
    refused = _decode("em/v1/t1/fix", {"ts": NOW - week - 60, "lat": 1, "lon": 2, "acc": 3})
    assert not refused.fixes
    assert refused.dead[0].reason == "too_late"
    event = _decode("em/v1/t1/event", {"ts": NOW - week - 60, "type": "strap_tamper"})
    assert not event.events and event.dead[0].reason == "too_late"


def test_fixes_and_events_before_the_assignment_floor_become_dead_letters():
    from datetime import UTC, datetime

    out = _decode(
        "em/v1/t1/fix",
        {
            "fixes": [
                {"ts": NOW - 100, "lat": 1, "lon": 2, "acc": 3, "seq": 1},
                {"ts": NOW - 10, "lat": 1, "lon": 2, "acc": 3, "seq": 2},
            ]
        },
    )
    ev = _decode("em/v1/t1/event", {"ts": NOW - 100, "type": "strap_tamper"})
    out.events, out.event_origins = ev.events, ev.event_origins
    floor = datetime.fromtimestamp(NOW - 50, UTC)
    assert out.refuse_before({"t1": floor, "other": floor}) == 2
    assert [f[2] for f in out.fixes] == [2]
    assert len(out.fix_origins) == 1
    assert not out.events
    assert [d.reason for d in out.dead] == ["before_assignment", "before_assignment"]
    assert out.dead[0].detail.startswith("fixes[0]: fix ts ")
    assert json.loads(out.dead[0].payload)["seq"] == 1  # the refused fix's own JSON
    assert out.dead[1].payload == json.dumps({"ts": NOW - 100, "type": "strap_tamper"}).encode()
    assert {d.sender for d in out.dead} == {"t1"}
    assert out.refuse_before({"t1": floor}) == 0  # idempotent: a retried batch refuses nothing new


def test_dead_letters_name_their_sender_from_the_topic():
    from tagwatch.ingest.decode import sender_of

    assert sender_of("em/v1/tag-1/fix") == "tag-1"
    assert sender_of("owntracks/alice/phone") == "owntracks/alice"
    assert sender_of("owntracks/alice/other-name/x") == "owntracks/alice"
    assert len(sender_of("em/v1/" + "x" * 5000 + "/fix")) == 128


@pytest.mark.parametrize(
    "payload",
    [
        b'{"x": ' + b"[" * 100_000,
        b'{"fixes": [' + b"[" * 100_000,
        b'{"ts": 1, "lat": 1, "lon": 2, "acc": 3, "detail": ' + b"[" * 100_000 + b"}",
    ],
)
@pytest.mark.parametrize("topic", ["em/v1/t1/fix", "em/v1/t1/event", "owntracks/u/p1"])
def test_json_nested_past_the_recursion_limit_is_malformed_not_a_crash(topic, payload):
    """Before, RecursionError escaped the decoder and stopped ingest's decode stage on a message
    the broker redelivered after every restart: one 100 KB publish stopped all ingest."""
    out = _decode(topic, payload)
    assert [d.reason for d in out.dead] == ["malformed_json"]
    assert out.dead[0].detail == "JSON nested too deeply"
    assert not out.fixes and not out.events


def test_a_batch_refused_as_a_whole_keeps_no_fix_it_decoded_before():
    good = json.dumps({"ts": NOW, "lat": 1, "lon": 2, "acc": 3, "seq": 1})
    payload = b'{"fixes": [' + good.encode() + b", " + b"[" * 100_000
    out = _decode("em/v1/t1/fix", payload)
    assert not out.fixes and not out.fix_origins
    assert [d.reason for d in out.dead] == ["malformed_json"]


def test_the_event_types_are_written_once():
    """The decoder accepts exactly the vocabulary's device events, and every event the rules
    open or clear an episode on is one of them (a misspelt one would never fire)."""
    assert decode.EVENT_TYPES is vocabulary.EVENT_TYPES
    assert set(vocabulary.EVENT_OPENS) | set(vocabulary.EVENT_CLEARS) <= vocabulary.EVENT_TYPES


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        ({"id": "7", "ts": NOW, "status": "ok"}, "schema_violation"),
        ({"id": "7", "status": "done"}, "schema_violation"),
        ({"id": "seven", "ts": NOW, "status": "done"}, "unknown_command"),
        ({"id": "7", "ts": NOW + 3600, "status": "done"}, "timestamp_in_future"),
    ],
)
def test_refused_command_answers(payload, reason):
    out = _decode("em/v1/t1/ack", payload)
    assert out.answers == []
    assert [d.reason for d in out.dead] == [reason]


def test_a_command_answer_is_decoded_for_the_writer():
    out = _decode("em/v1/t1/ack", {"id": 42, "ts": NOW, "status": "failed", "detail": "no GPS"})
    assert out.dead == []
    (answer,) = out.answers
    assert (answer.device_id, answer.command_id, answer.status, answer.detail) == (
        "t1",
        42,
        "failed",
        "no GPS",
    )
    assert answer.device_ts.timestamp() == NOW
