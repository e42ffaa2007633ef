"""Traccar Client's OsmAnd protocol, as the API relays it: `osmand/{device_id}/query` carries the
request's parameters (query string and form body, URL-encoded, the token taken out) and
`osmand/{device_id}/json` the JSON body newer Traccar Clients post.

What is accepted follows the Traccar server's own decoder (traccar/traccar,
src/main/java/org/traccar/protocol/OsmAndProtocolDecoder.java) and the clients
(traccar/traccar-client-android ProtocolFormatter.java and Position.java; traccar/traccar-client
lib/preferences.dart, whose JSON is the flutter_background_geolocation location):

* parameters: `id` / `deviceid`, `lat`, `lon` (or `location=lat,lon`), `timestamp` (epoch
  seconds, or milliseconds when at least 2^31, or ISO 8601 with an offset), `speed` in **knots**
  (the Android client multiplies m/s by 1.943844), `bearing` / `heading`, `altitude`,
  `accuracy`, `batt` (percent), `valid`; the rest (`hdop`, `charge`, `wifi`, `cell`, ...) is
  read by nobody here and left in the raw payload;
* JSON: `{"location": {...} | [...], "device_id": ...}` with `timestamp` (ISO 8601),
  `coords.latitude/longitude/accuracy/altitude`, `coords.speed` in **m/s** and `coords.heading`
  (negative: unknown), `battery.level` as a fraction (negative: unknown).

Where the platform is stricter than Traccar, on purpose: a fix needs its own position and time
(Traccar would use the last position and the server's clock, which would store a position the phone
never reported); a time without an offset (`2024-01-02 03:04:05`, the server's zone for Traccar) is
`timestamp_invalid`; an `id` other than the device's is `topic_mismatch` (the API has already
refused it, this is the second lock). An accuracy of 0 or less, or none, is unknown accuracy
(stored as NULL, like an OwnTracks location without `acc`: never evidence): the Android client
sends `accuracy=0.0` for every GPS fix, and no receiver is exact, so reading 0 as "exact" would let
a fix count as confidently inside or outside a zone. A `valid=false` fix is stored the same way. An
`alarm` (the client's SOS button) is a `panic` event at the fix's time, beside the fix: from a
victim's phone it raises `victim_panic`.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

import msgspec

from tagwatch.ingest.decode import (
    DEVICE_ID,
    MAX_TS_CHARS,
    Decoded,
    DeviceInfo,
    Limits,
    Lookup,
    Origin,
    Reason,
    Refused,
    _FixFields,
    decode_or_refuse,
    fix_row,
    schema_reason,
)

TOPIC_ROOT = "osmand"
TOPIC_PREFIX = f"{TOPIC_ROOT}/"
QUERY = "query"
JSON = "json"
KNOTS_TO_MPS = 1852.0 / 3600.0
# Traccar reads a number below 2^31 as seconds, above as milliseconds.
MILLISECONDS_FROM = 2_147_483_647
MAX_PARAMETERS = 200
# The parameters read here; one given twice with different values is refused, not guessed at.
READ = frozenset(
    {
        "id",
        "deviceid",
        "lat",
        "lon",
        "location",
        "timestamp",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "batt",
        "valid",
        "alarm",
    }
)


def osmand_topic(device_id: str, shape: str) -> str:
    """Where the API relays an OsmAnd request of ``shape`` (QUERY or JSON)."""
    return f"{TOPIC_ROOT}/{device_id}/{shape}"


def speaks_osmand(device: DeviceInfo) -> bool:
    """An OsmAnd phone is the one phone without an OwnTracks topic (the devices table's
    `devices_topic_fits_kind` constraint, migration 0017), so ingest's registry, which knows
    kind and topic, can tell without another column."""
    return device.kind != "tag" and device.owntracks_topic is None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise Refused(Reason.SCHEMA, f"{name}={text[:40]!r} is not a number") from exc
    if not math.isfinite(value):
        raise Refused(Reason.NON_FINITE, f"{name} is not a finite number")
    return value


def _epoch(text: str) -> float | str:
    """A query timestamp as decode.parse_ts takes it: epoch seconds, or the ISO string."""
    if len(text) > MAX_TS_CHARS:
        raise Refused(Reason.BAD_TIMESTAMP, f"timestamp is a {len(text)}-character string")
    if "T" in text or "-" in text[1:] or ":" in text:
        return text.replace(" ", "T", 1) if "T" not in text else text
    value = _number("timestamp", text)
    return value / 1000.0 if value >= MILLISECONDS_FROM else value


def _parameters(payload: bytes) -> dict[str, str]:
    try:
        text = payload.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
    except UnicodeDecodeError as exc:
        raise Refused(Reason.SCHEMA, "the parameters are not UTF-8") from exc
    except ValueError as exc:
        raise Refused(Reason.SCHEMA, f"more than {MAX_PARAMETERS} parameters") from exc
    found: dict[str, str] = {}
    for key, value in pairs:
        if value == "" or key not in READ:
            continue  # Traccar skips empty values too
        if key in found and found[key] != value:
            raise Refused(Reason.SCHEMA, f"parameter {key!r} given twice with different values")
        found[key] = value
    return found


def _query_fix(device: DeviceInfo, params: dict[str, str]) -> _FixFields:
    claimed = params.get("id", params.get("deviceid"))
    if claimed is not None and claimed != device.device_id:
        raise Refused(Reason.TOPIC_MISMATCH, f"id {claimed[:64]!r} is not this device")
    lat, lon = params.get("lat"), params.get("lon")
    if "location" in params and lat is None and lon is None:
        lat, _, lon = params["location"].partition(",")
    if not lat or not lon or "timestamp" not in params:
        missing = "timestamp" if lat and lon else "lat/lon"
        raise Refused(Reason.SCHEMA, f"missing required parameter `{missing}`")
    number = {
        name: _number(name, params[name])
        for name in ("speed", "bearing", "heading", "altitude", "accuracy", "batt")
        if name in params
    }
    valid = params.get("valid", "true").lower() in {"true", "1"}
    accuracy = number.get("accuracy")
    speed = number.get("speed")
    return _FixFields(
        ts=_epoch(params["timestamp"]),
        lat=_number("lat", lat),
        lon=_number("lon", lon),
        acc=accuracy if valid and accuracy is not None and accuracy > 0 else None,
        alt=number.get("altitude"),
        spd=None if speed is None else speed * KNOTS_TO_MPS,
        hdg=number.get("bearing", number.get("heading")),
        batt=number.get("batt"),
        src="gps",
    )


def decode_osmand_query(
    device: DeviceInfo, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    try:
        params = _parameters(payload)
        row = fix_row(device.device_id, _query_fix(device, params), now, limits, require_acc=False)
    except Refused as refused:
        out.refuse(topic, payload, refused.reason, refused.detail)
        return
    out.add_fix(row, Origin(topic, payload, ""))
    if "alarm" in params:
        # Traccar Client's SOS button (and the OsmAnd `alarm` of other trackers): a `panic`
        # event at the fix's time, beside it. From a victim's phone it is a `victim_panic`;
        # from an offender's it is on the record (alerts/victim_rules.py).
        detail = msgspec.json.encode({"source": "osmand", "alarm": params["alarm"][:64]}).decode()
        out.add_event(
            (device.device_id, row[1], -1, "panic", None, detail), Origin(topic, payload, "")
        )


class _Coords(msgspec.Struct, forbid_unknown_fields=False):
    latitude: float | None = None
    longitude: float | None = None
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None


class _Battery(msgspec.Struct, forbid_unknown_fields=False):
    level: float | None = None


class _Location(msgspec.Struct, forbid_unknown_fields=False):
    timestamp: str | None = None
    coords: _Coords | None = None
    battery: _Battery | None = None


class _Root(msgspec.Struct, forbid_unknown_fields=False):
    location: _Location | list[msgspec.Raw] | None = None
    device_id: str | None = None


_root = msgspec.json.Decoder(_Root)
_location = msgspec.json.Decoder(_Location)


def _known(value: float | None) -> float | None:
    """The background-geolocation library reports an unknown speed or heading as -1."""
    return None if value is None or value < 0 else value


def _json_fix(location: _Location) -> _FixFields:
    if location.timestamp is None:
        raise Refused(Reason.SCHEMA, "missing required field `location.timestamp`")
    coords = location.coords or _Coords()
    if coords.latitude is None or coords.longitude is None:
        raise Refused(Reason.SCHEMA, "missing required field `location.coords.latitude/longitude`")
    level = _known(location.battery.level) if location.battery else None
    accuracy = coords.accuracy
    return _FixFields(
        ts=location.timestamp,
        lat=coords.latitude,
        lon=coords.longitude,
        acc=accuracy if accuracy is not None and accuracy > 0 else None,
        alt=coords.altitude,
        spd=_known(coords.speed),
        hdg=_known(coords.heading),
        batt=None if level is None else level * 100.0,
        src="gps",
    )


def decode_osmand_json(
    device: DeviceInfo, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    root = decode_or_refuse(_root, topic, payload, out)
    if root is None:
        return
    if root.device_id is not None and root.device_id != device.device_id:
        detail = f"device_id {root.device_id[:64]!r} is not this device"
        out.refuse(topic, payload, Reason.TOPIC_MISMATCH, detail)
        return
    if root.location is None:
        out.refuse(topic, payload, Reason.SCHEMA, "missing required field `location`")
        return
    if isinstance(root.location, _Location):
        try:
            row = fix_row(
                device.device_id, _json_fix(root.location), now, limits, require_acc=False
            )
            out.add_fix(row, Origin(topic, payload, ""))
        except Refused as refused:
            out.refuse(topic, payload, refused.reason, refused.detail)
        return
    if len(root.location) > limits.max_batch_fixes:
        detail = f"{len(root.location)} locations in one message; at most {limits.max_batch_fixes}"
        out.refuse(topic, payload, Reason.TOO_MANY, detail)
        return
    for index, raw in enumerate(root.location):
        item = bytes(raw)
        try:
            row = fix_row(
                device.device_id, _json_fix(_location.decode(item)), now, limits, require_acc=False
            )
            out.add_fix(row, Origin(topic, raw, f"location[{index}]: "))
        except msgspec.ValidationError as exc:
            out.refuse(topic, item, schema_reason(exc), f"location[{index}]: {exc}")
        except Refused as refused:
            out.refuse(topic, item, refused.reason, f"location[{index}]: {refused.detail}")


def decode_osmand(
    device: DeviceInfo, topic: str, payload: bytes, now: float, limits: Limits, out: Decoded
) -> None:
    """`osmand/{device_id}/{query|json}`, for a device registered as an OsmAnd phone."""
    if not speaks_osmand(device):
        out.refuse(
            topic,
            payload,
            Reason.TOPIC_MISMATCH,
            f"device {device.device_id!r} is not registered as an OsmAnd phone",
        )
        return
    shape = topic.rsplit("/", 1)[-1]
    if shape == QUERY:
        decode_osmand_query(device, topic, payload, now, limits, out)
    elif shape == JSON:
        decode_osmand_json(device, topic, payload, now, limits, out)
    else:
        out.refuse(topic, payload, Reason.UNKNOWN_TOPIC, f"unknown OsmAnd channel {shape!r}")


def is_osmand_topic(topic: str) -> bool:
    return topic.startswith(TOPIC_PREFIX)


def decode_osmand_message(
    topic: str,
    payload: bytes,
    now: float,
    lookup: Lookup,
    _owntracks: Lookup,
    limits: Limits,
    out: Decoded,
) -> None:
    """`decode.decode_message` for the `osmand/...` family (the same signature, so ingest picks
    one or the other by topic): size, topic and device checked, then decoded; JSON nested too
    deeply is refused whole as malformed, as there."""
    if len(payload) > limits.max_payload_bytes:
        detail = f"{len(payload)} bytes; at most {limits.max_payload_bytes}"
        out.refuse(topic, payload, Reason.OVERSIZE, detail)
        return
    parts = topic.split("/")
    if len(parts) != 3 or not DEVICE_ID.match(parts[1]):
        out.refuse(topic, payload, Reason.UNKNOWN_TOPIC, "not an osmand/{device_id}/... topic")
        return
    device = lookup(parts[1])
    if device is None:
        out.refuse(topic, payload, Reason.UNKNOWN_DEVICE, f"device {parts[1]!r} is not registered")
        return
    mark = out.mark()
    try:
        decode_osmand(device, topic, payload, now, limits, out)
    except RecursionError:
        out.rewind(mark)
        out.refuse(topic, payload, Reason.MALFORMED_JSON, "JSON nested too deeply")
