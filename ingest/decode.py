"""Turn one MQTT message into rows to store, or into dead letters that say why not.

Decoding is typed (msgspec) so that a wrong type is refused with the path of the offending field,
and everything the contract forbids (NaN, out-of-range coordinates, fixes from the future,
oversize payloads, unknown devices, a topic that does not fit the device) becomes a dead letter
with the raw bytes. A batch with one bad fix keeps its good ones: only the bad fix is refused.

Time is bounded on both sides: a fix more than `future_tolerance_s` ahead of the server, or more
than `max_lateness_s` behind it (the longest store-and-forward a tag holds), is refused here; a
fix older than the start of the device's current assignment is refused by the writer
(`Decoded.refuse_before`), which reads the assignments in the batch's own transaction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import msgspec

from tagwatch.alerts.batch import MODE_UNKNOWN, NewEvents, NewFixes, NewPhoneReports, beacon_of
from tagwatch.alerts.vocabulary import EVENT_TYPES  # the device contract's event types, once

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FIX_SOURCES = frozenset({"gps", "wifi", "cell"})
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
MAX_ACCURACY_M = 100_000.0
MAX_TS_CHARS = 64  # RFC 3339 with nanoseconds and an offset is 35 characters


class Reason:
    """Dead-letter reasons; each is a metrics label, so the set is closed."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA = "schema_violation"
    NON_FINITE = "non_finite_number"
    OUT_OF_RANGE = "value_out_of_range"
    COORDINATES = "coordinates_out_of_range"
    FUTURE = "timestamp_in_future"
    TOO_LATE = "too_late"
    BEFORE_ASSIGNMENT = "before_assignment"
    BAD_TIMESTAMP = "timestamp_invalid"
    OVERSIZE = "payload_too_large"
    TOO_MANY = "too_many_fixes"
    UNKNOWN_DEVICE = "unknown_device"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_EVENT = "unknown_event_type"
    BAD_STATUS = "invalid_status"
    UNSUPPORTED = "unsupported_message_type"
    DECODER_ERROR = "decoder_error"
    QUARANTINED = "sender_quarantined"
    UNKNOWN_COMMAND = "unknown_command"
    NO_DECRYPTION_KEY = "no_decryption_key"
    DECRYPTION_FAILED = "decryption_failed"


class _FixFields(msgspec.Struct, forbid_unknown_fields=False):
    ts: float | str | None = None
    lat: float | None = None
    lon: float | None = None
    acc: float | None = None
    seq: int | None = None
    alt: float | None = None
    spd: float | None = None
    hdg: float | None = None
    sats: int | None = None
    batt: float | None = None
    src: str | None = None


FixFields = _FixFields  # what a fix carries, for the decoders of other formats (ingest.owntracks)


class _FixMessage(_FixFields, forbid_unknown_fields=False):
    fixes: list[msgspec.Raw] | None = None


class _Event(msgspec.Struct, forbid_unknown_fields=False):
    ts: float | str
    type: str
    seq: int | None = None
    batt: float | None = None
    detail: Any = None


class _EventMessage(msgspec.Struct, forbid_unknown_fields=False):
    events: list[msgspec.Raw] | None = None
    ts: float | str | None = None
    type: str | None = None
    seq: int | None = None
    batt: float | None = None
    detail: Any = None


class _Ack(msgspec.Struct, forbid_unknown_fields=False):
    """A tag's answer to a command (`em/v1/{id}/ack`, docs/contract-extensions.md)."""

    id: str | int
    ts: float | str
    status: str
    detail: str | None = None


_fix_message = msgspec.json.Decoder(_FixMessage)
_fix_fields = msgspec.json.Decoder(_FixFields)
_event_message = msgspec.json.Decoder(_EventMessage)
_event = msgspec.json.Decoder(_Event)
_ack = msgspec.json.Decoder(_Ack)
_encode = msgspec.json.Encoder()

# Row order matches the fixes table's COPY columns.
FixRow = tuple[
    str,
    datetime,
    int,
    float,
    float,
    float | None,
    float | None,
    float | None,
    float | None,
    int | None,
    float | None,
    str,
]
EventRow = tuple[str, datetime, int, str, float | None, str | None]
# A phone's OwnTracks message (ingest/owntracks.py), in the phone_messages table's column order:
# device, sub-topic, `_type`, time, SHA-256 of the payload, the JSON (None for a fresh
# location), encrypted, batt, bs, m, conn, t.
PhoneRow = tuple[
    str,
    str,
    str,
    datetime,
    bytes,
    str | None,
    bool,
    float | None,
    int | None,
    int | None,
    str | None,
    str | None,
]


def engine_fixes(rows: Sequence[FixRow]) -> NewFixes:
    """The engine's columns of stored fix rows; a fix without accuracy (an OwnTracks location
    without `acc`) has unknown accuracy: NaN, which the engine never takes as evidence."""
    return NewFixes.of(
        (r[0], r[1].timestamp(), r[4], r[3], math.nan if r[5] is None else r[5], r[11] or "gps")
        for r in rows
    )


def phone_kind(message_type: str, trigger: str | None) -> str:
    """What a phone message is to the rules (alerts.batch.NewPhoneReports.kind)."""
    if message_type == "location":
        return "ping" if trigger == "p" else "location"
    return "lwt" if message_type == "lwt" else "message"


def engine_phones(rows: Sequence[PhoneRow]) -> NewPhoneReports:
    """The engine's columns of stored phone messages."""
    return NewPhoneReports.of(
        (
            r[0],
            r[3].timestamp(),
            phone_kind(r[2], r[11]),
            math.nan if r[7] is None else r[7],
            r[8] or 0,
            MODE_UNKNOWN if r[9] is None else r[9],
            r[10] or "",
        )
        for r in rows
    )


def engine_events(rows: Sequence[EventRow]) -> NewEvents:
    """The engine's columns of stored event rows; a beacon event's beacon from its detail."""
    return NewEvents.of((r[0], r[1].timestamp(), r[3], _beacon(r)) for r in rows)


def _beacon(row: EventRow) -> str | None:
    """The beacon a beacon event's stored detail names (other events' details are not read)."""
    if not row[3].startswith("beacon_home_") or row[5] is None:
        return None
    return beacon_of(msgspec.json.decode(row[5]))


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    kind: str
    owntracks_topic: str | None
    # OwnTracks payload encryption (secretbox key, 32 bytes), unsealed by the registry
    payload_key: bytes | None = field(default=None, repr=False)


SENDER_MAX = 128


@lru_cache(maxsize=4096)
def sender_of(topic: str) -> str:
    """Who a message is from, for the per-device dead-letter limit: the device id of a tag topic,
    `owntracks/{user}` of a phone's (the broker pins both to the account, so a sender cannot
    spread its refused messages over many names); anything else by its first segments."""
    parts = topic.split("/", 4)
    if len(parts) >= 3 and parts[0] == "em":
        return parts[2][:SENDER_MAX]
    if len(parts) >= 2 and parts[0] == "owntracks":
        return "/".join(parts[:2])[:SENDER_MAX]
    return "/".join(parts[:2])[:SENDER_MAX]


@dataclass
class DeadLetter:
    """A refused message (or one refused fix of a batch). `payload` is the whole input; the
    writer keeps only a prefix of it, with the length and SHA-256 of the whole."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    sender: str = ""

    def __post_init__(self) -> None:
        if not self.sender:
            self.sender = sender_of(self.topic)


@dataclass(slots=True)
class Origin:
    """Where a decoded fix or event came from, so the writer can still dead-letter it."""

    topic: str
    raw: bytes | msgspec.Raw
    where: str  # "" for a single object, "fixes[3]: " for an item of a batch


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A decoded `em/v1/{id}/ack`; the writer matches it to the command (or dead-letters it)."""

    device_id: str
    command_id: int
    status: str
    device_ts: datetime
    detail: str | None
    topic: str
    payload: bytes


@dataclass
class Decoded:
    fixes: list[FixRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    statuses: list[tuple[str, str, str]] = field(default_factory=list)  # device, status, source
    answers: list[CommandAnswer] = field(default_factory=list)  # tags' answers to commands
    dead: list[DeadLetter] = field(default_factory=list)
    fix_origins: list[Origin] = field(default_factory=list)  # one per fix, same order
    event_origins: list[Origin] = field(default_factory=list)  # one per event, same order
    phones: list[PhoneRow] = field(default_factory=list)  # OwnTracks messages (phone_messages)
    # messages acknowledged without anything to store, by why (OwnTracks' empty retained
    # "clear" message, the platform's own commands on a phone's cmd topic): counted, never lost
    ignored: Counter[str] = field(default_factory=Counter)

    def refuse(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self.dead.append(DeadLetter(topic, payload, reason, detail))

    def mark(self) -> tuple[int, int, int, int, int]:
        """How much is held, to `rewind` to; index 3 is the dead letters (the flood guard)."""
        return (
            len(self.fixes),
            len(self.events),
            len(self.statuses),
            len(self.dead),
            len(self.phones),
        )

    def rewind(self, mark: tuple[int, int, int, int, int]) -> None:
        """Forget what one message added, so it can be refused as a whole."""
        fixes, events, statuses, dead, phones = mark
        del self.fixes[fixes:], self.fix_origins[fixes:]
        del self.events[events:], self.event_origins[events:]
        del self.statuses[statuses:], self.dead[dead:], self.phones[phones:]

    def add_fix(self, row: FixRow, origin: Origin) -> None:
        self.fixes.append(row)
        self.fix_origins.append(origin)

    def add_event(self, row: EventRow, origin: Origin) -> None:
        self.events.append(row)
        self.event_origins.append(origin)

    def refuse_before(self, floors: Mapping[str, datetime]) -> int:
        """Dead-letter every fix and event older than its device's floor (the start of the
        device's current assignment): a reused tag cannot write into its previous holder's
        history, nor anyone into time before the holder had the device. Returns how many."""
        if not floors:
            return 0
        self.fixes, self.fix_origins, late_fixes = _split(self.fixes, self.fix_origins, floors)
        self.events, self.event_origins, late_events = _split(
            self.events, self.event_origins, floors
        )
        for noun, refused in (("fix", late_fixes), ("event", late_events)):
            for row, origin, floor in refused:
                self.refuse(
                    origin.topic,
                    bytes(origin.raw),
                    Reason.BEFORE_ASSIGNMENT,
                    f"{origin.where}{noun} ts {row[1].isoformat()} is before the device's "
                    f"current assignment began ({floor.isoformat()})",
                )
        return len(late_fixes) + len(late_events)


Row = TypeVar("Row", FixRow, EventRow)


def _split(
    rows: list[Row], origins: list[Origin], floors: Mapping[str, datetime]
) -> tuple[list[Row], list[Origin], list[tuple[Row, Origin, datetime]]]:
    """The rows at or after their device's floor, their origins, and the refused ones."""
    kept: list[Row] = []
    kept_origins: list[Origin] = []
    refused: list[tuple[Row, Origin, datetime]] = []
    for row, origin in zip(rows, origins, strict=True):
        floor = floors.get(row[0])
        if floor is None or row[1] >= floor:
            kept.append(row)
            kept_origins.append(origin)
        else:
            refused.append((row, origin, floor))
    return kept, kept_origins, refused


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_batch_fixes: int = 500
    future_tolerance_s: float = 300.0
    max_lateness_s: float = 7 * 86400.0


Lookup = Callable[[str], DeviceInfo | None]


def _finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise Refused(Reason.NON_FINITE, f"{name} is not a finite number")


def _range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise Refused(Reason.OUT_OF_RANGE, f"{name}={value} outside [{low}, {high}]")


def schema_reason(exc: msgspec.ValidationError) -> str:
    """msgspec reports an unrepresentable number (1e999) as a validation error; name it."""
    return Reason.NON_FINITE if str(exc).startswith("Number out of range") else Reason.SCHEMA


def parse_ts(value: float | str | None, now: float, limits: Limits) -> datetime:
    """Epoch seconds or RFC 3339 with an offset; refused if naive, absurd or in the future."""
    if value is None:
        raise Refused(Reason.SCHEMA, "missing required field `ts`")
    if isinstance(value, str):
        if len(value) > MAX_TS_CHARS:  # parsing (and quoting) a huge string costs; no date is
            raise Refused(Reason.BAD_TIMESTAMP, f"ts is a {len(value)}-character string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise Refused(Reason.BAD_TIMESTAMP, f"ts is not RFC 3339: {value!r}") from exc
        if parsed.tzinfo is None:
            raise Refused(Reason.BAD_TIMESTAMP, f"ts has no UTC offset: {value!r}")
        epoch = parsed.timestamp()
    else:
        if not math.isfinite(value):
            raise Refused(Reason.NON_FINITE, "ts is not a finite number")
        epoch = float(value)
    if epoch < EARLIEST:
        raise Refused(Reason.BAD_TIMESTAMP, f"ts {value!r} is before 2000-01-01")
    if epoch > now + limits.future_tolerance_s:
        raise Refused(
            Reason.FUTURE, f"ts {value!r} is {epoch - now:.0f} s ahead of the server clock"
        )
    if epoch < now - limits.max_lateness_s:
        raise Refused(
            Reason.TOO_LATE,
            f"ts {value!r} is {now - epoch:.0f} s old; at most {limits.max_lateness_s:.0f} s "
            "(the longest a tag holds fixes) are accepted",
        )
    return datetime.fromtimestamp(epoch, UTC)


def _seq(value: int | None) -> int:
    if value is None:
        return -1
    if not 0 <= value < 2**63:
        raise Refused(Reason.OUT_OF_RANGE, f"seq={value} must be a non-negative 64-bit integer")
    return value


def fix_row(
    device_id: str, fix: _FixFields, now: float, limits: Limits, *, require_acc: bool = True
) -> FixRow:
    """A fix row. `require_acc=False` (OwnTracks, where `acc` may be left out) stores a fix
    without accuracy as NULL: unknown, never evidence (see engine_fixes)."""
    for name in ("lat", "lon", "acc") if require_acc else ("lat", "lon"):
        if getattr(fix, name) is None:
            raise Refused(Reason.SCHEMA, f"missing required field `{name}`")
    lat, lon = float(fix.lat), float(fix.lon)  # type: ignore[arg-type]
    acc = None if fix.acc is None else float(fix.acc)
    for name, value in (
        ("lat", lat),
        ("lon", lon),
        ("acc", acc),
        ("alt", fix.alt),
        ("spd", fix.spd),
        ("hdg", fix.hdg),
        ("batt", fix.batt),
    ):
        _finite(name, value)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise Refused(Reason.COORDINATES, f"lat={lat}, lon={lon} outside WGS84 degrees")
    _range("acc", acc, 0.0, MAX_ACCURACY_M)
    _range("spd", fix.spd, 0.0, 1000.0)
    _range("hdg", fix.hdg, 0.0, 360.0)
    _range("batt", fix.batt, 0.0, 100.0)
    _range("sats", fix.sats, 0, 255)
    src = fix.src or "gps"
    if src not in FIX_SOURCES:
        raise Refused(Reason.SCHEMA, f"src must be one of gps, wifi, cell, not {src!r}")
    ts = parse_ts(fix.ts, now, limits)
    return (
        device_id,
        ts,
        _seq(fix.seq),
        lat,
        lon,
        acc,
        fix.alt,
        fix.spd,
        fix.hdg,
        fix.sats,
        fix.batt,
        src,
    )


Decoded_T = TypeVar("Decoded_T")


def decode_or_refuse(
    decoder: msgspec.json.Decoder[Decoded_T], topic: str, payload: bytes, out: Decoded
) -> Decoded_T | None:
    """The typed message, or None with the payload refused: a wrong type or a missing field
    as a schema violation naming the field's path, anything that is not JSON as malformed."""
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        out.refuse(topic, payload, schema_reason(exc), str(exc))
    except msgspec.DecodeError as exc:
        out.refuse(topic, payload, Reason.MALFORMED_JSON, str(exc))
    return None


def decode_fix_payload(
    device_id: str, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    message = decode_or_refuse(_fix_message, topic, payload, out)
    if message is None:
        return
    if message.fixes is None:
        try:
            out.add_fix(fix_row(device_id, message, now, limits), Origin(topic, payload, ""))
        except Refused as refused:
            out.refuse(topic, payload, refused.reason, refused.detail)
        return
    if len(message.fixes) > limits.max_batch_fixes:
        out.refuse(
            topic,
            payload,
            Reason.TOO_MANY,
            f"{len(message.fixes)} fixes in one message; at most {limits.max_batch_fixes}",
        )
        return
    for index, raw in enumerate(message.fixes):
        item = bytes(raw)
        try:
            fix = _fix_fields.decode(item)
            out.add_fix(
                fix_row(device_id, fix, now, limits), Origin(topic, raw, f"fixes[{index}]: ")
            )
        except msgspec.ValidationError as exc:
            out.refuse(topic, item, schema_reason(exc), f"fixes[{index}]: {exc}")
        except Refused as refused:
            out.refuse(topic, item, refused.reason, f"fixes[{index}]: {refused.detail}")


def event_row(
    device_id: str, event: _Event | _EventMessage, now: float, limits: Limits
) -> EventRow:
    if event.type is None:
        raise Refused(Reason.SCHEMA, "missing required field `type`")
    if event.type not in EVENT_TYPES:
        raise Refused(Reason.UNKNOWN_EVENT, f"unknown event type {event.type!r}")
    _finite("batt", event.batt)
    _range("batt", event.batt, 0.0, 100.0)
    ts = parse_ts(event.ts, now, limits)
    detail = None if event.detail is None else _encode.encode(event.detail).decode()
    return (device_id, ts, _seq(event.seq), event.type, event.batt, detail)


def decode_event_payload(
    device_id: str, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    message = decode_or_refuse(_event_message, topic, payload, out)
    if message is None:
        return
    if message.events is None:
        try:
            out.add_event(event_row(device_id, message, now, limits), Origin(topic, payload, ""))
        except Refused as refused:
            out.refuse(topic, payload, refused.reason, refused.detail)
        return
    if len(message.events) > limits.max_batch_fixes:
        out.refuse(topic, payload, Reason.TOO_MANY, f"{len(message.events)} events in one message")
        return
    for index, raw in enumerate(message.events):
        item = bytes(raw)
        try:
            row = event_row(device_id, _event.decode(item), now, limits)
            out.add_event(row, Origin(topic, raw, f"events[{index}]: "))
        except msgspec.ValidationError as exc:
            out.refuse(topic, item, schema_reason(exc), f"events[{index}]: {exc}")
        except Refused as refused:
            out.refuse(topic, item, refused.reason, f"events[{index}]: {refused.detail}")


MAX_ANSWER_DETAIL = 500


def decode_ack(
    device_id: str, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    """A tag's answer: `{"id", "ts", "status": "done" | "failed", "detail"}`. The command id is
    the string the command carried (a number is taken too); whether it names a command this
    device was sent is the writer's question (`store.commands.record_answers`)."""
    answer = decode_or_refuse(_ack, topic, payload, out)
    if answer is None:
        return
    text = str(answer.id)
    if not text.isdigit() or len(text) > 18:
        out.refuse(topic, payload, Reason.UNKNOWN_COMMAND, f"command id {text[:40]!r}")
        return
    if answer.status not in {"done", "failed"}:
        out.refuse(topic, payload, Reason.SCHEMA, "status must be done or failed")
        return
    try:
        ts = parse_ts(answer.ts, now, limits)
    except Refused as refused:
        out.refuse(topic, payload, refused.reason, refused.detail)
        return
    detail = None if answer.detail is None else answer.detail[:MAX_ANSWER_DETAIL]
    out.answers.append(
        CommandAnswer(device_id, int(text), answer.status, ts, detail, topic, payload)
    )
