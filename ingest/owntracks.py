"""OwnTracks, all of it: every `_type` the apps send, on every sub-topic they use.

The formats are the OwnTracks booklet's (docs/tech/json.md, github:owntracks/booklet) and what
the Recorder (github:owntracks/recorder, recorder.c `handle_message`) accepts. What each message
becomes (docs/phones.md has the table):

* `location` on the base topic: a fix at `tst` (the position's time; `created_at` is when the
  message was built and is not the fix time), plus one `phone_messages` row with the phone's
  state (`batt`, `bs`, `m`, `conn`, `t`) for the phone rules. Numbers may come as strings (older
  apps); `-1` (or any negative) means unknown for `batt`, `vel` and `cog`; `alt` is kept (a
  negative altitude is a real place) unless `vac` is negative, which is how iOS says the altitude
  is invalid; a missing or negative `acc` is unknown accuracy, stored as NULL (the booklet leaves
  `acc` out "if zero", and some trackers never send it), never evidence for an episode.
* `location` with `t: "p"`: a ping. Its `tst` is the time of the ping, not of the position (the
  booklet: "The `tst` in a ping is a current timestamp, so that it doesn't look like a
  duplicate"), so it is never a fix: it is kept in `phone_messages` (payload and all) and tells
  the rules the phone is alive, with its battery and mode, but moves no one.
* `transition` (`/event`): its position is a fix (the booklet makes `acc` required there) and the
  transition itself is kept in `phone_messages`.
* `lwt`: the device is offline (`device_status`), and the rules learn the broker lost the
  connection (alerts/rules.py: it is not communication from the phone).
* `status`, `card`, `waypoint`, `waypoints`, `steps`, `configuration`, `beacon`, `request`,
  `cmd`: kept as they are in `phone_messages`; each is communication from the phone.
* `encrypted`: `data` is opened with the device's key (libsodium secretbox, as the apps and the
  Recorder do) and the clear text is decoded as above, its row marked `encrypted`.
* An empty payload (the retained "clear" message a client publishes to delete a retained
  location) and anything on the `cmd` sub-topic (the platform's own commands to the phone) are
  acknowledged and counted (`tagwatch_ingest_messages_ignored_total{reason}`), never stored.
* Any other `_type` is a dead letter, `unsupported_message_type`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from tagwatch.alerts.victim_protection import owntracks_panic
from tagwatch.ingest.decode import (
    Decoded,
    DeviceInfo,
    FixFields,
    FixRow,
    Limits,
    Origin,
    PhoneRow,
    Reason,
    Refused,
    fix_row,
    parse_ts,
    schema_reason,
)

KEY_BYTES: Final = SecretBox.KEY_SIZE  # 32
NONCE_BYTES: Final = SecretBox.NONCE_SIZE  # 24
MAX_NUMBER_CHARS: Final = 32
# Every `_type` the booklet lists (docs/tech/json.md, "Types") but `location`, `transition`,
# `lwt` and `encrypted`, which are read here; plus `dump`, which the Recorder takes as a
# configuration.
KEPT_TYPES: Final = frozenset(
    {
        "beacon",
        "card",
        "cmd",
        "configuration",
        "dump",
        "request",
        "status",
        "steps",
        "waypoint",
        "waypoints",
    }
)
# Secrets a configuration export may carry (booklet tech/json.md `_type=configuration`): kept
# out of the database, which would otherwise hold the phone's broker password in clear.
SECRET_SETTINGS: Final = ("password", "encryptionKey", "passphrase", "tlsClientCrtPassword")
REDACTED: Final = "[redacted]"
IGNORED_CLEAR: Final = "owntracks_retained_clear"
IGNORED_CMD: Final = "owntracks_cmd_topic"

Number = float | str | None


class _Envelope(msgspec.Struct, forbid_unknown_fields=False, rename={"type_": "_type"}):
    type_: str
    data: Any = None  # `encrypted` only
    tst: Any = None


class _Location(msgspec.Struct, forbid_unknown_fields=False, rename={"type_": "_type"}):
    type_: str
    lat: Number = None
    lon: Number = None
    tst: Number = None
    acc: Number = None
    alt: Number = None
    vac: Number = None
    batt: Number = None
    vel: Number = None
    cog: Number = None
    bs: Number = None
    m: Number = None
    conn: str | None = None
    t: str | None = None
    created_at: Number = None


_envelope = msgspec.json.Decoder(_Envelope)
_location = msgspec.json.Decoder(_Location)


def passphrase_key(passphrase: str) -> bytes:
    """The secretbox key the apps make of the `encryptionKey` setting: its bytes, truncated or
    padded with zero bytes to 32 (booklet features/encrypt.md: "an up to 32 octet long
    passphrase (which the apps pad with binary zeroes)"; the Recorder zeroes a 32-byte buffer
    and copies the key into it)."""
    return passphrase.encode("utf-8")[:KEY_BYTES].ljust(KEY_BYTES, b"\0")


def decrypt(key: bytes, data: str) -> bytes:
    """Open an `encrypted` message's `data`: base64 of nonce (24 bytes) + secretbox ciphertext
    (the Recorder's `decrypt`: `crypto_secretbox_open_easy(..., ciphertext + NONCEBYTES, ...,
    nonce = ciphertext, key)`). Raises Refused(DECRYPTION_FAILED) saying why not."""
    try:
        sealed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused(Reason.DECRYPTION_FAILED, "`data` is not base64") from exc
    if len(sealed) <= NONCE_BYTES + SecretBox.MACBYTES:
        raise Refused(
            Reason.DECRYPTION_FAILED,
            f"`data` is {len(sealed)} bytes: shorter than a nonce and an authenticator",
        )
    try:
        return SecretBox(key).decrypt(sealed[NONCE_BYTES:], sealed[:NONCE_BYTES])
    except CryptoError as exc:
        raise Refused(
            Reason.DECRYPTION_FAILED,
            "authentication failed: encrypted with another key, or altered on the way",
        ) from exc


def _number(name: str, value: Number) -> float | None:
    """A JSON number, or a number sent as a string (older apps); refused if neither."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS:
            raise Refused(Reason.SCHEMA, f"`{name}` is a {len(text)}-character string")
        try:
            number = float(text)
        except ValueError as exc:
            raise Refused(Reason.SCHEMA, f"`{name}` is not a number: {value!r}") from exc
    else:
        number = float(value)
    if not math.isfinite(number):
        raise Refused(Reason.NON_FINITE, f"`{name}` is not a finite number")
    return number


def _known(name: str, value: Number) -> float | None:
    """A number where the apps send `-1` (any negative) for "unknown"."""
    number = _number(name, value)
    return None if number is None or number < 0 else number


def _code(name: str, value: Number, allowed: range) -> int | None:
    """A small integer code (`bs`, `m`); an unknown code is refused, not guessed."""
    number = _number(name, value)
    if number is None:
        return None
    if number != int(number) or int(number) not in allowed:
        raise Refused(Reason.OUT_OF_RANGE, f"`{name}`={value!r} is not one of {list(allowed)}")
    return int(number)


def _text(value: str | None, limit: int = 16) -> str | None:
    return None if value is None else value[:limit]


def sub_topic(device: DeviceInfo, topic: str) -> str:
    """The part of `topic` after the phone's base topic: '' for the base topic itself."""
    base = device.owntracks_topic or "/".join(topic.split("/")[:3])
    return topic[len(base) :].lstrip("/") if topic.startswith(base) else ""


def decode_owntracks(
    device: DeviceInfo, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    """One OwnTracks message of `device` on `topic` (its base topic or a sub-topic of it), as
    the module docstring says. The entry point for every intake of OwnTracks (MQTT here; HTTP
    mode posts the same JSON); what is refused is a dead letter with the raw bytes."""
    sub = sub_topic(device, topic)
    if not payload:
        out.ignored[IGNORED_CLEAR] += 1
        return
    if sub == "cmd" or sub.startswith("cmd/"):
        out.ignored[IGNORED_CMD] += 1
        return
    mark = out.mark()
    try:
        _decode(device, topic, sub, payload, payload, now, limits, out, encrypted=False)
    except Refused as refused:
        out.rewind(mark)
        out.refuse(topic, payload, refused.reason, refused.detail)
    except msgspec.ValidationError as exc:
        out.rewind(mark)
        out.refuse(topic, payload, schema_reason(exc), str(exc))
    except msgspec.DecodeError as exc:
        out.rewind(mark)
        out.refuse(topic, payload, Reason.MALFORMED_JSON, str(exc))


def _decode(
    device: DeviceInfo,
    topic: str,
    sub: str,
    raw: bytes,
    body: bytes,
    now: float,
    limits: Limits,
    out: Decoded,
    *,
    encrypted: bool,
) -> None:
    """`raw` is what arrived (kept with a refusal and digested for the row's key), `body` the
    JSON to read: the same bytes, or the clear text of an `encrypted` message."""
    envelope = _envelope.decode(body)
    kind = envelope.type_
    if kind == "encrypted":
        if encrypted:
            raise Refused(Reason.SCHEMA, "an encrypted message inside an encrypted message")
        if device.payload_key is None:
            raise Refused(
                Reason.NO_DECRYPTION_KEY,
                f"device {device.device_id!r} has no payload encryption key on the platform",
            )
        if not isinstance(envelope.data, str):
            raise Refused(Reason.SCHEMA, "`data` of an encrypted message must be a string")
        clear = decrypt(device.payload_key, envelope.data)
        _decode(device, topic, sub, raw, clear, now, limits, out, encrypted=True)
        return
    digest = hashlib.sha256(raw).digest()
    if kind == "location":
        _location_message(device, topic, sub, raw, body, digest, now, limits, out, encrypted)
    elif kind == "transition":
        _transition(device, topic, sub, raw, body, digest, now, limits, out, encrypted)
    elif kind == "lwt":
        out.statuses.append((device.device_id, "offline", "owntracks_lwt"))
        when = datetime.fromtimestamp(now, UTC)  # its `tst` is when the app connected
        out.phones.append(_row(device, sub, kind, when, digest, body, encrypted))
    elif kind in KEPT_TYPES:
        when = _message_time(envelope.tst, now, limits)
        if kind in ("configuration", "dump"):
            body = _redacted(body)
        out.phones.append(_row(device, sub, kind, when, digest, body, encrypted))
    else:
        raise Refused(Reason.UNSUPPORTED, f"OwnTracks _type {kind!r}")


def _redacted(body: bytes) -> bytes:
    """A configuration without its secrets (the digest, the key of the row, is of what came)."""
    settings = msgspec.json.decode(body)
    if not isinstance(settings, dict):
        return body
    hidden = {k: REDACTED for k in SECRET_SETTINGS if k in settings}
    return msgspec.json.encode({**settings, **hidden}) if hidden else body


def _message_time(tst: Any, now: float, limits: Limits) -> datetime:
    """A kept message's own `tst` when it has a usable one, else the time it was received
    (a card has no time; a waypoint's `tst` is when the region was created, maybe years ago)."""
    if isinstance(tst, int | float) and not isinstance(tst, bool):
        try:
            return parse_ts(float(tst), now, limits)
        except Refused:
            pass
    return datetime.fromtimestamp(now, UTC)


def _row(
    device: DeviceInfo,
    sub: str,
    kind: str,
    ts: datetime,
    digest: bytes,
    body: bytes | None,
    encrypted: bool,
    location: _Location | None = None,
    state: tuple[float | None, int | None, int | None] = (None, None, None),
) -> PhoneRow:
    try:
        text = None if body is None else body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(Reason.MALFORMED_JSON, "payload is not UTF-8") from exc
    batt, charging, mode = state
    conn = _text(location.conn) if location else None
    trigger = _text(location.t) if location else None
    return (
        device.device_id,
        sub,
        kind,
        ts,
        digest,
        text,
        encrypted,
        batt,
        charging,
        mode,
        conn,
        trigger,
    )


def _location_message(
    device: DeviceInfo,
    topic: str,
    sub: str,
    raw: bytes,
    body: bytes,
    digest: bytes,
    now: float,
    limits: Limits,
    out: Decoded,
    encrypted: bool,
) -> None:
    loc = _location.decode(body)
    batt = _known("batt", loc.batt)
    if batt is not None and batt > 100:
        raise Refused(Reason.OUT_OF_RANGE, f"batt={batt} outside [0, 100]")
    state = (batt, _code("bs", loc.bs, range(4)), _code("m", loc.m, range(-1, 3)))
    row = _fix(device, loc, batt, now, limits)
    if loc.t == "p":
        # a ping: alive, not a fresh position (its tst is the time of the ping)
        out.phones.append(
            _row(device, sub, "location", row[1], digest, body, encrypted, loc, state)
        )
        return
    out.add_fix(row, Origin(topic, raw, ""))
    out.phones.append(_row(device, sub, "location", row[1], digest, None, encrypted, loc, state))
    _victim_panic(device, topic, raw, body, row[1], out)


def _fix(
    device: DeviceInfo, loc: _Location, batt: float | None, now: float, limits: Limits
) -> FixRow:
    vel = _known("vel", loc.vel)
    vac = _number("vac", loc.vac)
    alt = None if vac is not None and vac < 0 else _number("alt", loc.alt)
    fix = FixFields(
        ts=_number("tst", loc.tst),
        lat=_number("lat", loc.lat),
        lon=_number("lon", loc.lon),
        acc=_known("acc", loc.acc),
        alt=alt,
        spd=None if vel is None else vel / 3.6,  # km/h → m/s
        hdg=_known("cog", loc.cog),
        batt=batt,
        src="gps",
    )
    if fix.ts is None:
        raise Refused(Reason.SCHEMA, "missing required field `tst`")
    return fix_row(device.device_id, fix, now, limits, require_acc=False)


def _transition(
    device: DeviceInfo,
    topic: str,
    sub: str,
    raw: bytes,
    body: bytes,
    digest: bytes,
    now: float,
    limits: Limits,
    out: Decoded,
    encrypted: bool,
) -> None:
    """An enter/leave: the position it fired at is a fix (when it carries one); the transition
    itself is kept as the phone sent it."""
    loc = _location.decode(body)
    if loc.lat is not None or loc.lon is not None:
        row = _fix(device, loc, None, now, limits)
        out.add_fix(row, Origin(topic, raw, ""))
        when = row[1]
    else:
        tst = _number("tst", loc.tst)
        when = parse_ts(tst, now, limits)
    out.phones.append(_row(device, sub, "transition", when, digest, body, encrypted))
    _victim_panic(device, topic, raw, body, when, out)


VICTIM_PHONE: Final = "victim_phone"


def _victim_panic(
    device: DeviceInfo, topic: str, raw: bytes, body: bytes, when: datetime, out: Decoded
) -> None:
    """A victim's phone calling for help (the publish button, an `SOS` point of interest or
    beacon waypoint: `alerts.victim_protection.owntracks_panic`) is also a `panic` event at the
    message's time, which the victim rules raise as `victim_panic`. Only a victim phone's
    messages are read this way: an offender pressing publish is just a position."""
    if device.kind != VICTIM_PHONE:
        return
    message = msgspec.json.decode(body)
    if not isinstance(message, dict) or not owntracks_panic(message):
        return
    detail = msgspec.json.encode({"source": "owntracks", "_type": message.get("_type")}).decode()
    out.add_event((device.device_id, when, -1, "panic", None, detail), Origin(topic, raw, ""))


__all__ = [
    "IGNORED_CLEAR",
    "IGNORED_CMD",
    "KEPT_TYPES",
    "decode_owntracks",
    "decrypt",
    "passphrase_key",
    "sub_topic",
]
