"""Which decoder a message goes to: by topic, after checking the device and the topic agree.

Tag topics (`em/v1/{device}/{fix,event,status,ack}`) are decoded by `ingest.decode`, a phone's
OwnTracks topic and its sub-topics (`owntracks/{user}/{device}[/...]`) by `ingest.owntracks`.
Kept apart from both so that each decoder stays small and neither imports the other's topics.
"""

from __future__ import annotations

from tagwatch.ingest.decode import (
    DEVICE_ID,
    Decoded,
    Limits,
    Lookup,
    Reason,
    decode_ack,
    decode_event_payload,
    decode_fix_payload,
)
from tagwatch.ingest.owntracks import decode_owntracks


def decode_message(
    topic: str,
    payload: bytes,
    now: float,
    lookup: Lookup,
    owntracks: Lookup,
    limits: Limits,
    out: Decoded,
) -> None:
    """Route by topic, check the device and the topic agree, decode; everything refused is kept.

    JSON nested deeper than the decoder's recursion limit (`{"x": [[[[...`, a few bytes per
    level) raises RecursionError, not a decode error: it is refused here as malformed, whole,
    rather than escaping and stopping the decode stage on a message the broker would redeliver
    for ever."""
    mark = out.mark()
    try:
        _route(topic, payload, now, lookup, owntracks, limits, out)
    except RecursionError:
        out.rewind(mark)
        out.refuse(topic, payload, Reason.MALFORMED_JSON, "JSON nested too deeply")


def _route(
    topic: str,
    payload: bytes,
    now: float,
    lookup: Lookup,
    owntracks: Lookup,
    limits: Limits,
    out: Decoded,
) -> None:
    if len(payload) > limits.max_payload_bytes:
        out.refuse(
            topic,
            payload,
            Reason.OVERSIZE,
            f"{len(payload)} bytes; at most {limits.max_payload_bytes}",
        )
        return
    parts = topic.split("/")
    if parts[0] == "owntracks":
        device = owntracks("/".join(parts[:3]))
        if device is None:
            out.refuse(topic, payload, Reason.UNKNOWN_DEVICE, "no phone registered on this topic")
            return
        decode_owntracks(device, topic, payload, now, limits, out)
        return
    if len(parts) != 4 or parts[0] != "em" or parts[1] != "v1":
        out.refuse(topic, payload, Reason.UNKNOWN_TOPIC, "not a tag or OwnTracks topic")
        return
    device_id, channel = parts[2], parts[3]
    if not DEVICE_ID.match(device_id):
        out.refuse(topic, payload, Reason.SCHEMA, f"device id {device_id!r} is not valid")
        return
    device = lookup(device_id)
    if device is None:
        out.refuse(topic, payload, Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered")
        return
    if device.kind != "tag":
        out.refuse(
            topic,
            payload,
            Reason.TOPIC_MISMATCH,
            f"device {device_id!r} is a {device.kind}; phones publish on their OwnTracks topic",
        )
        return
    if channel == "fix":
        decode_fix_payload(device_id, topic, payload, now, limits, out)
    elif channel == "event":
        decode_event_payload(device_id, topic, payload, now, limits, out)
    elif channel == "status":
        text = payload.decode("utf-8", "replace").strip()
        if text not in {"online", "offline"}:
            out.refuse(topic, payload, Reason.BAD_STATUS, "status must be online or offline")
            return
        out.statuses.append((device_id, text, "mqtt_status"))
    elif channel == "ack":
        decode_ack(device_id, topic, payload, now, limits, out)
    else:
        out.refuse(topic, payload, Reason.UNKNOWN_TOPIC, f"unknown channel {channel!r}")
