"""Device models publish exactly the contract's wire formats, at the times the field shows."""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tagwatch.simulators.devices import (
    Battery,
    DeviceKind,
    DeviceSpec,
    Incident,
    IncidentKind,
    simulate_device,
)
from tagwatch.simulators.movement import GoStop, Mode, Place, StayStop, build_trajectory
from tagwatch.simulators.noise import Fallback, Sky
from tagwatch.simulators.wire import (
    MAX_BATCH_ITEMS,
    MAX_PAYLOAD_BYTES,
    LinkAction,
    batches,
    read_trace,
)

CAPE_TOWN = ZoneInfo("Africa/Johannesburg")
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=CAPE_TOWN).timestamp()
HOUR = 3600.0
HOME = Place("home", 18.4722, -33.9379, Sky.INDOOR)
WORK = Place("work", 18.4200, -33.9203, Sky.INDOOR)
FIX_KEYS = {"ts", "lat", "lon", "acc", "seq", "spd", "hdg", "sats", "batt", "src"}


def _commute(hours: float = 12.0):
    stops = [
        StayStop(HOME, until=T0 + HOUR),
        GoStop(WORK, Mode.CAR),
        StayStop(WORK, until=T0 + 9 * HOUR),
        GoStop(HOME, Mode.CAR),
        StayStop(HOME),
    ]
    return build_trajectory(T0, T0 + hours * HOUR, stops, random.Random(1))


def _tag(*incidents: Incident, battery: Battery | None = None, hours: float = 12.0, **kw):
    spec = DeviceSpec(
        "tag-1",
        DeviceKind.TAG,
        incidents=tuple(incidents),
        battery=battery or Battery(),
        **kw,
    )
    return simulate_device(spec, _commute(hours), T0, T0 + hours * HOUR, random.Random(2))


def _phone(*incidents: Incident, hours: float = 12.0):
    spec = DeviceSpec(
        "phone-1",
        DeviceKind.PHONE,
        incidents=tuple(incidents),
        owntracks_topic="owntracks/sim-u/phone-1",
        tid="p1",
        battery=Battery(start_pct=80.0, drain_pct_per_h=1.5),
    )
    return simulate_device(spec, _commute(hours), T0, T0 + hours * HOUR, random.Random(3))


def _messages(timeline, channel: str):
    out = []
    for publication in timeline.publications:
        if publication.topic.endswith("/" + channel):
            message = json.loads(publication.payload)
            items = message.get("fixes", message.get("events", [message]))
            out.extend((publication, item) for item in items)
    return out


def _assert_fix(fix: dict) -> None:
    assert set(fix) <= FIX_KEYS and {"ts", "lat", "lon", "acc", "seq", "src"} <= set(fix)
    assert isinstance(fix["ts"], float | int) or datetime.fromisoformat(fix["ts"]).tzinfo
    assert -90 <= fix["lat"] <= 90 and -180 <= fix["lon"] <= 180
    assert isinstance(fix["acc"], float) and fix["acc"] > 0
    assert isinstance(fix["seq"], int) and fix["seq"] > 0
    assert isinstance(fix["batt"], int) and 0 <= fix["batt"] <= 100
    assert fix["src"] in {"gps", "wifi", "cell"}
    if fix["src"] == "gps":
        assert fix["spd"] >= 0 and isinstance(fix["sats"], int)
    if "hdg" in fix:
        assert 0 <= fix["hdg"] <= 360


def test_a_tag_connects_announces_itself_and_fixes_every_minute():
    timeline = _tag()
    first_link = timeline.links[0]
    assert first_link.action is LinkAction.CONNECT and first_link.at == T0
    assert first_link.will is not None
    assert (first_link.will.topic, first_link.will.payload, first_link.will.retain) == (
        "em/v1/tag-1/status",
        b"offline",
        True,
    )
    status = timeline.publications[0]
    assert (status.topic, status.payload, status.retain, status.qos) == (
        "em/v1/tag-1/status",
        b"online",
        True,
        1,
    )
    fixes = _messages(timeline, "fix")
    for publication, fix in fixes:
        _assert_fix(fix)
        assert publication.qos == 1 and not publication.retain
        assert 0 < publication.at - fix["ts"] < 5  # sent as it is taken
    times = [fix["ts"] for _, fix in fixes]
    gaps = {round(b - a) for a, b in itertools.pairwise(times)}
    assert gaps <= {60, 120, 180, 240}  # every 60 s; indoors a fix is sometimes missing
    sequence = [fix["seq"] for _, fix in fixes]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)


def test_pursuit_fixes_every_15_seconds_then_back_to_60():
    timeline = _tag(Incident(IncidentKind.PURSUIT, T0 + 2 * HOUR, T0 + 3 * HOUR))
    times = [fix["ts"] for _, fix in _messages(timeline, "fix")]
    inside = [t for t in times if T0 + 2 * HOUR <= t < T0 + 3 * HOUR]
    assert len(inside) >= 200  # 240 at 15 s, less the odd missing indoor fix
    after = [t for t in times if t >= T0 + 3 * HOUR + 120]
    assert round(after[1] - after[0]) % 60 == 0


def test_out_of_coverage_fixes_are_buffered_and_uploaded_late_in_batches():
    gap = Incident(IncidentKind.COVERAGE_GAP, T0 + 2 * HOUR, T0 + 4 * HOUR)
    strap = Incident(IncidentKind.STRAP_CUT, T0 + 3 * HOUR)
    timeline = _tag(gap, strap)
    drop, back = timeline.links[1], timeline.links[2]
    assert (drop.action, drop.at) == (LinkAction.DROP, T0 + 2 * HOUR)
    assert (back.action, back.at) == (LinkAction.CONNECT, T0 + 4 * HOUR)
    during = [p for p in timeline.publications if T0 + 2 * HOUR <= p.at < T0 + 4 * HOUR]
    assert during == []
    after = [p for p in timeline.publications if T0 + 4 * HOUR <= p.at < T0 + 4 * HOUR + 5]
    assert after[0].payload == b"online" and after[0].retain
    batch = json.loads(after[1].payload)
    assert 100 <= len(batch["fixes"]) <= 120
    assert all(T0 + 2 * HOUR <= f["ts"] < T0 + 4 * HOUR for f in batch["fixes"])
    events = json.loads(after[2].payload)["events"]
    assert [e["type"] for e in events] == ["strap_tamper"] and events[0]["ts"] == T0 + 3 * HOUR


def test_a_fix_in_flight_when_coverage_goes_is_buffered_not_sent():
    first = json.loads(next(p for p in _tag().publications if p.topic.endswith("/fix")).payload)
    gap = Incident(IncidentKind.COVERAGE_GAP, first["ts"] + 0.1, first["ts"] + HOUR)
    timeline = _tag(gap)
    drop, back = timeline.links[1].at, timeline.links[2].at
    assert not [p for p in timeline.publications if drop < p.at < back]
    batch = next(p for p in timeline.publications if p.topic.endswith("/fix") and p.at >= back)
    assert json.loads(batch.payload)["fixes"][0]["ts"] == first["ts"]


def test_batches_respect_the_contracts_500_fixes_and_256_kib():
    fix = {"ts": T0, "lat": -33.9, "lon": 18.4, "acc": 8.0, "seq": 1, "src": "gps"}
    payloads = batches([fix] * 1_234, "fixes")
    assert [len(json.loads(p)["fixes"]) for p in payloads] == [500, 500, 234]
    fat = {**fix, "pad": "x" * 2_000}
    payloads = batches([fat] * 400, "fixes")
    assert len(payloads) > 1
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert sum(len(json.loads(p)["fixes"]) for p in payloads) == 400
    assert all(len(json.loads(p)["fixes"]) <= MAX_BATCH_ITEMS for p in payloads)


def test_a_long_gap_in_pursuit_uploads_several_valid_batches():
    gap = Incident(IncidentKind.COVERAGE_GAP, T0 + HOUR, T0 + 11 * HOUR)
    pursuit = Incident(IncidentKind.PURSUIT, T0 + HOUR, T0 + 11 * HOUR)
    timeline = _tag(gap, pursuit)
    uploads = [p for p in timeline.publications if b'"fixes"' in p.payload]
    assert len(uploads) >= 4
    assert all(len(p.payload) <= MAX_PAYLOAD_BYTES for p in uploads)
    assert all(len(json.loads(p.payload)["fixes"]) <= MAX_BATCH_ITEMS for p in uploads)


def test_battery_warns_low_then_critical_then_powers_off_and_drops_the_link():
    timeline = _tag(battery=Battery(start_pct=26.0, drain_pct_per_h=2.5))
    events = [(e["type"], e["ts"]) for _, e in _messages(timeline, "event")]
    assert events == [
        ("battery_low", pytest.approx(T0 + 2.4 * HOUR)),
        ("battery_critical", pytest.approx(T0 + 8.4 * HOUR)),
        ("power_off", pytest.approx(T0 + 10.4 * HOUR)),
    ]
    assert timeline.links[-1].action is LinkAction.DROP
    assert max(p.at for p in timeline.publications) < T0 + 10.4 * HOUR + 10


def test_charging_reports_and_recharges():
    charge = Incident(IncidentKind.CHARGE, T0 + HOUR, T0 + 2 * HOUR)
    timeline = _tag(charge, battery=Battery(start_pct=30.0))
    types = [e["type"] for _, e in _messages(timeline, "event")]
    assert types[:2] == ["charging_started", "charging_stopped"]
    levels = [f["batt"] for _, f in _messages(timeline, "fix")]
    assert max(levels) >= 75


def test_jamming_is_detected_within_a_minute_and_cell_fixes_carry_on():
    jam = Incident(IncidentKind.JAMMING, T0 + 2 * HOUR, T0 + 3 * HOUR, fallback=Fallback.CELL)
    timeline = _tag(jam)
    events = {e["type"]: e["ts"] for _, e in _messages(timeline, "event")}
    assert T0 + 2 * HOUR < events["jamming_detected"] <= T0 + 2 * HOUR + 60
    assert T0 + 2 * HOUR + 540 <= events["gps_lost"] <= T0 + 2 * HOUR + 660  # 10 min, no GNSS
    assert events["jamming_cleared"] >= T0 + 3 * HOUR
    assert events["gps_restored"] >= T0 + 3 * HOUR
    during = [f for _, f in _messages(timeline, "fix") if T0 + 2 * HOUR < f["ts"] < T0 + 3 * HOUR]
    assert during and {f["src"] for f in during} == {"cell"}


def test_without_any_fix_the_tag_keeps_talking_with_heartbeats():
    denied = Incident(IncidentKind.GPS_DENIED, T0 + 2 * HOUR, T0 + 4 * HOUR)
    timeline = _tag(denied)
    events = [e["type"] for _, e in _messages(timeline, "event")]
    assert events.count("heartbeat") >= 15
    sent = [p.at for p in timeline.publications if T0 + 2 * HOUR <= p.at < T0 + 4 * HOUR]
    assert not [f for _, f in _messages(timeline, "fix") if T0 + 2 * HOUR < f["ts"] < T0 + 4 * HOUR]
    assert max(b - a for a, b in itertools.pairwise(sent)) <= 370


def test_tamper_events_and_rfc3339_times():
    timeline = _tag(
        Incident(IncidentKind.STRAP_CUT, T0 + HOUR),
        Incident(IncidentKind.CASE_TAMPER, T0 + 2 * HOUR),
        ts_format="rfc3339",
    )
    events = [e for _, e in _messages(timeline, "event")]
    assert [e["type"] for e in events] == ["strap_tamper", "case_tamper"]
    assert datetime.fromisoformat(events[0]["ts"]).timestamp() == T0 + HOUR
    for _, fix in _messages(timeline, "fix"):
        assert datetime.fromisoformat(fix["ts"]).utcoffset() is not None


def test_a_tag_left_behind_stays_where_it_was_left():
    timeline = _tag(Incident(IncidentKind.LEFT_BEHIND, T0 + 1.2 * HOUR))
    fixes, _ = read_trace(timeline.publications)
    late = [f for f in fixes if f.ts > T0 + 5 * HOUR and f.src == "gps"]
    spread = max(abs(f.lat - late[0].lat) for f in late)
    assert spread < 0.01  # noise only; the wearer drove to work and back


def test_phones_speak_owntracks_and_report_irregularly():
    timeline = _phone()
    link = timeline.links[0]
    assert link.will is not None and link.will.topic == "owntracks/sim-u/phone-1"
    assert json.loads(link.will.payload) == {"_type": "lwt", "tst": int(T0)}
    messages = [json.loads(p.payload) for p in timeline.publications]
    assert all(p.topic == "owntracks/sim-u/phone-1" for p in timeline.publications)
    for message in messages:
        assert message["_type"] == "location" and message["tid"] == "p1"
        for key in ("tst", "acc", "batt", "vel"):
            assert isinstance(message[key], int)
        assert isinstance(message["lat"], float) and isinstance(message["lon"], float)
        assert 0 <= message.get("cog", 0) < 360
    gaps = [b["tst"] - a["tst"] for a, b in itertools.pairwise(messages)]
    assert min(gaps) < 120 and max(gaps) > 240  # on movement, and on a timer
    assert max(gaps) <= 900
    moving = [m for m in messages if m["vel"] > 0]
    assert moving and all(25 <= m["vel"] <= 60 for m in moving)  # km/h by car, 8–15 m/s


def test_a_phone_out_of_coverage_queues_and_sends_one_by_one():
    gap = Incident(IncidentKind.COVERAGE_GAP, T0 + 2 * HOUR, T0 + 3 * HOUR)
    timeline = _phone(gap)
    flushed = [p for p in timeline.publications if T0 + 3 * HOUR <= p.at < T0 + 3 * HOUR + 10]
    assert flushed
    assert all(json.loads(p.payload)["tst"] < T0 + 3 * HOUR for p in flushed)
    assert [link.action for link in timeline.links] == [
        LinkAction.CONNECT,
        LinkAction.DROP,
        LinkAction.CONNECT,
    ]
