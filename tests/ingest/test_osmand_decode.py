"""The OsmAnd decoder alone, no broker: what ingest makes of what the API relays of Traccar
Client's requests (tests/fixtures/phones_http/ has where each request comes from)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tagwatch.ingest.decode import Decoded, DeviceInfo, Limits
from tagwatch.ingest.osmand import decode_osmand_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "phones_http"
NOW = 1_800_000_000.0
TS = int(NOW) - 60
ISO = datetime.fromtimestamp(TS, UTC).isoformat().replace("+00:00", "Z")
OSMAND = DeviceInfo("ph1", "phone", None)
OWNTRACKS = DeviceInfo("ot1", "phone", "owntracks/u/ot1")
TAG = DeviceInfo("t1", "tag", None)
DEVICES = {d.device_id: d for d in (OSMAND, OWNTRACKS, TAG)}
# fix row columns (decode.FixRow)
TS_COL, LAT, LON, ACC, ALT, SPD, HDG, BATT = 1, 3, 4, 5, 6, 7, 8, 10


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def fill(text: str, device: str = "ph1", ts: object = TS) -> str:
    return text.replace("{id}", device).replace("{timestamp}", str(ts))


def decode(topic: str, payload: bytes) -> Decoded:
    out = Decoded()
    decode_osmand_message(topic, payload, NOW, DEVICES.get, lambda _t: None, Limits(), out)
    return out


def query(text: str, device: str = "ph1") -> Decoded:
    return decode(f"osmand/{device}/query", text.encode())


def test_android_query_is_a_fix_in_si_units():
    case = fixture("traccar_android_query.json")
    out = query(fill(case["query"]))
    assert not out.dead
    (row,) = out.fixes
    expected = case["expected"]
    assert row[0] == "ph1"
    assert row[TS_COL].timestamp() == TS
    assert (row[LAT], row[LON]) == (expected["lat"], expected["lon"])
    assert row[SPD] == pytest.approx(expected["spd_mps"])  # 10 knots, not 10 m/s
    assert (row[HDG], row[ALT], row[ACC], row[BATT]) == (90.0, 2.0, 8.0, 87.0)


def test_zero_accuracy_of_a_gps_fix_is_unknown_accuracy_not_exact():
    out = query(fill(fixture("traccar_android_query.json")["gps_fix_query"]))
    assert out.fixes[0][ACC] is None  # stored NULL: never evidence for an episode


def test_milliseconds_and_iso_timestamps_are_read_like_traccar():
    base = "id=ph1&lat=1.5&lon=2.5&timestamp="
    assert query(base + str(TS * 1000)).fixes[0][TS_COL].timestamp() == TS
    assert query(base + ISO).fixes[0][TS_COL].timestamp() == TS


def test_alarm_keeps_the_fix_and_is_a_panic_event_beside_it():
    out = query(fill(fixture("traccar_android_query.json")["alarm_query"]))
    assert not out.dead
    (fix,) = out.fixes
    (event,) = out.events
    assert event[0] == "ph1" and event[3] == "panic" and event[1] == fix[TS_COL]
    assert json.loads(event[5])["source"] == "osmand"


def test_json_of_the_current_client():
    case = fixture("traccar_client_json.json")
    body = fill(json.dumps(case["body"]), ts=ISO).encode()
    out = decode("osmand/ph1/json", body)
    assert not out.dead
    (row,) = out.fixes
    expected = case["expected"]
    assert row[TS_COL].timestamp() == TS
    assert row[SPD] == pytest.approx(expected["spd_mps"])  # already m/s in the JSON
    assert (row[HDG], row[ALT], row[ACC]) == (181.5, 4.1, 12.5)
    assert row[BATT] == pytest.approx(64.0)


def test_json_batch_and_unknown_speed():
    location = {"timestamp": ISO, "coords": {"latitude": 1, "longitude": 2, "speed": -1}}
    body = json.dumps({"location": [location, {"timestamp": ISO}], "device_id": "ph1"})
    out = decode("osmand/ph1/json", body.encode())
    assert len(out.fixes) == 1 and out.fixes[0][SPD] is None
    (dead,) = out.dead
    assert dead.reason == "schema_violation" and dead.detail.startswith("location[1]: ")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("id=ph1&lon=2&timestamp=1799999000", "schema_violation"),  # no lat
        ("id=ph1&lat=1&lon=2", "schema_violation"),  # no time: not the server's clock
        ("id=ph1&lat=north&lon=2&timestamp=1799999000", "schema_violation"),
        ("id=ph1&lat=nan&lon=2&timestamp=1799999000", "non_finite_number"),
        ("id=ph1&lat=91&lon=2&timestamp=1799999000", "coordinates_out_of_range"),
        ("id=ph1&lat=1&lon=2&timestamp=2027-01-15%2008:00:00", "timestamp_invalid"),  # no zone
        ("id=ph1&lat=1&lon=2&timestamp=0", "timestamp_invalid"),
        ("id=ph1&lat=1&lon=2&timestamp=1900000000", "timestamp_in_future"),
        ("id=ph1&lat=1&lon=2&timestamp=1799999000&batt=150", "value_out_of_range"),
        ("id=other&lat=1&lon=2&timestamp=1799999000", "topic_mismatch"),
        ("id=ph1&id=ph2&lat=1&lon=2&timestamp=1799999000", "schema_violation"),
    ],
)
def test_bad_query_is_a_dead_letter_with_its_reason(payload: str, reason: str):
    out = query(payload)
    assert not out.fixes
    (dead,) = out.dead
    assert dead.reason == reason, dead.detail
    assert dead.payload == payload.encode()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("osmand/ph1/json", b"{not json", "malformed_json"),
        ("osmand/ph1/json", b'{"device_id": "ph2", "location": {}}', "topic_mismatch"),
        ("osmand/ph1/json", b'{"device_id": "ph1"}', "schema_violation"),
        ("osmand/ot1/query", b"id=ot1&lat=1&lon=2&timestamp=1799999000", "topic_mismatch"),
        ("osmand/t1/query", b"id=t1&lat=1&lon=2&timestamp=1799999000", "topic_mismatch"),
        ("osmand/nobody/query", b"id=nobody&lat=1&lon=2&timestamp=1799999000", "unknown_device"),
        ("osmand/ph1/other", b"", "unknown_topic"),
        ("osmand/ph1", b"", "unknown_topic"),
        ("osmand/ph1/json", b"[" * 100_000, "schema_violation"),  # an array, not an object
        ("osmand/ph1/json", b'{"location": ' + b"[" * 100_000, "malformed_json"),
        ("osmand/ph1/query", b"x" * (256 * 1024 + 1), "payload_too_large"),
    ],
)
def test_bad_osmand_messages(topic: str, payload: bytes, reason: str):
    out = decode(topic, payload)
    assert not out.fixes
    assert [d.reason for d in out.dead] == [reason]
