"""The OwnTracks decoder over the apps' own payloads (tests/fixtures/owntracks, README there):
every `_type` and sub-topic is a fix, a kept phone message, an ignored-and-counted message or a
dead letter with a reason; nothing is silently dropped or misread."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from nacl.secret import SecretBox

from tagwatch.ingest.decode import Decoded, DeviceInfo, Limits, engine_fixes, engine_phones
from tagwatch.ingest.owntracks import (
    IGNORED_CLEAR,
    IGNORED_CMD,
    decode_owntracks,
    passphrase_key,
)
from tagwatch.ingest.routing import decode_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "owntracks"
CASES: dict[str, dict[str, str]] = json.loads((FIXTURES / "cases.json").read_text())
BASE = "owntracks/u/p1"
NOW = time.time()
# the fixtures were recorded between 2014 and 2025: judge them as if they had just arrived
LIMITS = Limits(max_lateness_s=40 * 365 * 86400.0)


def device(key: str | None = None) -> DeviceInfo:
    return DeviceInfo("p1", "phone", BASE, passphrase_key(key) if key else None)


def decode(name: str, key: str | None = None, sub: str | None = None) -> Decoded:
    case = CASES[name]
    sub = case["sub_topic"] if sub is None else sub
    topic = f"{BASE}/{sub}" if sub else BASE
    out = Decoded()
    payload = (FIXTURES / name).read_bytes()
    decode_owntracks(device(key or case.get("key")), topic, payload, NOW, LIMITS, out)
    return out


def test_every_fixture_is_listed_and_every_case_has_a_file():
    files = {p.name for p in FIXTURES.iterdir()} - {"cases.json", "README.md"}
    assert files == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_fixture_is_accounted_for(name: str):
    out = decode(name)
    outcome = CASES[name]["outcome"]
    accounted = len(out.fixes) + len(out.phones) + len(out.dead) + sum(out.ignored.values())
    assert accounted >= 1, "a message left no trace"
    if outcome.startswith("dead:"):
        assert [d.reason for d in out.dead] == [outcome.split(":", 1)[1]]
        assert not out.fixes and not out.phones
        return
    assert not out.dead, out.dead
    if outcome == "ignored":
        assert sum(out.ignored.values()) == 1 and not out.phones and not out.fixes
    elif outcome == "ping":
        assert not out.fixes and [p[11] for p in out.phones] == ["p"]
    elif outcome == "lwt":
        assert out.statuses == [("p1", "offline", "owntracks_lwt")]
        assert [p[2] for p in out.phones] == ["lwt"]
    elif outcome == "message":
        assert not out.fixes and len(out.phones) == 1
        assert out.phones[0][5] is not None  # the JSON is kept
    else:
        assert len(out.fixes) == 1
        assert (out.fixes[0][5] is None) == ("unknown_accuracy" in outcome)
        if "and_message" in outcome:
            assert [p[2] for p in out.phones] == ["transition"]


def test_batt_minus_one_keeps_the_fix_and_minus_one_means_unknown():
    out = decode("location_batt_minus1_recorder.json")
    (fix,) = out.fixes
    lat, lon, acc, alt, spd, hdg, batt = fix[3], fix[4], fix[5], fix[6], fix[7], fix[8], fix[10]
    assert (lat, lon, acc) == (48.85833, 2.29513, 5.0)
    assert (spd, hdg, batt) == (None, None, None)  # vel, cog, batt -1
    assert alt is None  # vac -1: iOS says the altitude is invalid
    assert fix[1].timestamp() == 1441984413


def test_numbers_as_strings_read_as_the_numbers_they_are():
    strings = decode("location_numbers_as_strings.json").fixes[0]
    numbers = decode("location_batt_minus1_recorder.json").fixes[0]
    assert strings == numbers


def test_tst_is_the_fix_time_not_created_at():
    (fix,) = decode("location_android_significant.json").fixes
    assert fix[1].timestamp() == 1709037003  # created_at is 1709037052


def test_vel_km_h_becomes_m_s_and_phone_state_is_kept():
    out = decode("location_ios_move_mode.json")
    assert out.fixes[0][7] == pytest.approx(79 / 3.6)
    (phone,) = out.phones
    assert phone[7:] == (34.0, 1, 2, "m", "t")  # batt, bs, m, conn, t
    assert phone[5] is None  # a fresh location's payload lives in the fix


def test_a_location_without_acc_is_unknown_accuracy_for_the_engine():
    out = decode("location_no_acc_quicksetup.json")
    assert out.fixes[0][5] is None
    columns = engine_fixes(out.fixes)
    assert columns.acc[0] != columns.acc[0]  # NaN: never evidence


def test_a_ping_is_not_a_fix_but_tells_the_rules_the_phone_is_alive():
    out = decode("location_ping.json")
    assert not out.fixes
    reports = engine_phones(out.phones)
    assert list(reports.kind) == ["ping"]
    assert list(reports.batt) == [99.0] and list(reports.charging) == [1]
    assert json.loads(out.phones[0][5])["lat"] == 52.3153748  # the ping is kept whole


def test_encrypted_as_the_android_app_does_it_is_decoded_like_a_plain_message():
    out = decode("encrypted_android_key_123.json")
    (fix,) = out.fixes
    assert (fix[3], fix[4], fix[5]) == (50.1182933, -5.5407733, 5.0)
    assert out.phones[0][6] is True  # marked encrypted
    assert out.phones[0][9] == 2  # m: move


def test_the_key_is_the_passphrase_zero_padded_and_the_nonce_leads_the_data():
    """The Recorder's layout (recorder.c `decrypt`), checked on the app's own vector."""
    data = json.loads((FIXTURES / "encrypted_android_key_123.json").read_text())["data"]
    sealed = base64.b64decode(data)
    key = b"123" + bytes(29)
    assert passphrase_key("123") == key
    clear = SecretBox(key).decrypt(sealed[24:], sealed[:24])
    assert json.loads(clear)["tid"] == "xa"
    assert passphrase_key("x" * 40) == b"x" * 32  # longer passphrases are cut, as the apps do


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ("TestCipherText", "not base64"),
        (base64.b64encode(bytes(30)).decode(), "shorter than"),
        (base64.b64encode(bytes(80)).decode(), "authentication failed"),
    ],
)
def test_bad_encrypted_data_is_a_dead_letter_saying_why(data: str, detail: str):
    out = Decoded()
    payload = json.dumps({"_type": "encrypted", "data": data}).encode()
    decode_owntracks(device("123"), BASE, payload, NOW, LIMITS, out)
    assert [d.reason for d in out.dead] == ["decryption_failed"]
    assert detail in out.dead[0].detail and out.dead[0].payload == payload


def test_encrypted_payload_of_a_device_without_a_key_is_a_dead_letter():
    out = Decoded()
    payload = (FIXTURES / "encrypted_android_key_123.json").read_bytes()
    decode_owntracks(device(None), BASE, payload, NOW, LIMITS, out)
    assert [d.reason for d in out.dead] == ["no_decryption_key"]


def test_another_phones_key_does_not_open_it():
    out = decode("encrypted_android_key_123.json", key="124")
    assert [d.reason for d in out.dead] == ["decryption_failed"]


def test_the_clear_message_and_the_cmd_topic_are_counted_not_stored():
    assert decode("clear_retained.bin").ignored == {IGNORED_CLEAR: 1}
    assert decode("cmd_report_location.json").ignored == {IGNORED_CMD: 1}
    # a cmd echo on another sub-topic is the phone's own message: kept
    assert len(decode("cmd_report_location.json", sub="status").phones) == 1


def test_configuration_secrets_are_not_kept():
    out = decode("configuration_booklet.json")
    kept = json.loads(out.phones[0][5])
    assert kept["password"] == "[redacted]" and kept["username"] == "jjolie"


def test_unknown_type_is_still_a_dead_letter():
    out = Decoded()
    decode_owntracks(device(), BASE, b'{"_type":"teleport"}', NOW, LIMITS, out)
    assert [d.reason for d in out.dead] == ["unsupported_message_type"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("lat", "north", "schema_violation"),
        ("lat", "NaN", "non_finite_number"),
        ("batt", 101, "value_out_of_range"),
        ("m", 7, "value_out_of_range"),
        ("bs", "2.5", "value_out_of_range"),
        ("lat", 91, "coordinates_out_of_range"),
    ],
)
def test_bad_location_fields_are_refused_whole(field: str, value: object, reason: str):
    message = {"_type": "location", "lat": 1.0, "lon": 2.0, "tst": int(NOW), "acc": 5}
    message[field] = value
    out = Decoded()
    decode_owntracks(device(), BASE, json.dumps(message).encode(), NOW, LIMITS, out)
    assert [d.reason for d in out.dead] == [reason]
    assert not out.fixes and not out.phones


def test_sub_topics_route_to_the_phone_and_unknown_phones_stay_dead_letters():
    out = Decoded()
    payload = (FIXTURES / "transition_android.json").read_bytes()
    lookup = {BASE: device()}
    decode_message(f"{BASE}/event", payload, NOW, lambda _: None, lookup.get, LIMITS, out)
    assert out.phones[0][1] == "event" and len(out.fixes) == 1
    out = Decoded()
    decode_message("owntracks/x/y/event", payload, NOW, lambda _: None, lookup.get, LIMITS, out)
    assert [d.reason for d in out.dead] == ["unknown_device"]


VICTIM_CASES = json.loads((FIXTURES.parent / "owntracks_victim" / "panic_cases.json").read_text())


@pytest.mark.parametrize("case", VICTIM_CASES, ids=[c["why"][:50] for c in VICTIM_CASES])
def test_a_victim_phones_call_for_help_is_a_panic_event_beside_its_fix(case: dict) -> None:
    """The booklet's own messages from a victim's phone: each panic (publish button, `SOS` POI,
    `SOS` beacon waypoint entered) is one `panic` event at the message's `tst`, beside its fix;
    anything else is none. The same message from an offender's phone is only a position."""
    payload = json.dumps(case["message"]).encode()
    topic = BASE + ("/event" if case["message"]["_type"] == "transition" else "")
    victim = Decoded()
    decode_owntracks(DeviceInfo("p1", "victim_phone", BASE), topic, payload, NOW, LIMITS, victim)
    offender = Decoded()
    decode_owntracks(device(), topic, payload, NOW, LIMITS, offender)
    assert not victim.dead and not offender.events
    assert [e[3] for e in victim.events] == (["panic"] if case["panic"] else [])
    for event in victim.events:
        assert event[1].timestamp() == float(case["message"]["tst"])
        assert json.loads(event[5])["source"] == "owntracks"
