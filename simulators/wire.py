"""What devices put on the wire: publications in exactly the contract's formats, and back.

A simulator's output is a timeline of `Publication`s (what a device sends, when, on which topic)
and `LinkChange`s (when its connection comes and goes, with the last will to set), so the
publishing runner stays a dumb player and everything that matters is testable without a broker.
`read_trace` decodes publications back into fixes and events, so the naive baseline and the
tests see exactly the bytes the platform sees.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

MAX_BATCH_ITEMS = 500
MAX_PAYLOAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Publication:
    """One MQTT publish: `at` is the device clock (epoch seconds) when it is sent."""

    at: float
    device_id: str
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class LinkAction(StrEnum):
    CONNECT = "connect"  # connect with the device's credentials and `will`
    DROP = "drop"  # the network goes without a DISCONNECT: the broker publishes the will


@dataclass(frozen=True)
class LinkChange:
    at: float
    device_id: str
    action: LinkAction
    will: Will | None = None


def tag_topic(device_id: str, channel: str) -> str:
    return f"em/v1/{device_id}/{channel}"


def tag_will(device_id: str) -> Will:
    """The contract: a tag sets a retained `offline` on its status topic as its last will."""
    return Will(tag_topic(device_id, "status"), b"offline", retain=True, qos=1)


def owntracks_will(topic: str, connected_at: float) -> Will:
    """OwnTracks sets `{"_type":"lwt","tst":<connect time>}` as its will on its own topic."""
    return Will(topic, encode({"_type": "lwt", "tst": int(connected_at)}), retain=False, qos=1)


def encode(message: Mapping[str, Any]) -> bytes:
    """Compact, deterministic JSON; NaN is refused here rather than by ingest."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def batches(items: Sequence[Mapping[str, Any]], key: str) -> list[bytes]:
    """`{"fixes": [...]}` (or `events`) payloads within the contract's 500 items and 256 KiB."""
    out: list[bytes] = []
    current: list[bytes] = []
    size = len(key) + 8  # {"key":[ ... ]}
    for item in items:
        encoded = encode(item)
        if current and (
            len(current) >= MAX_BATCH_ITEMS or size + len(encoded) + 1 > MAX_PAYLOAD_BYTES
        ):
            out.append(_join(key, current))
            current, size = [], len(key) + 8
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        out.append(_join(key, current))
    return out


def _join(key: str, items: list[bytes]) -> bytes:
    return b'{"' + key.encode() + b'":[' + b",".join(items) + b"]}"


@dataclass(frozen=True)
class TraceFix:
    """A fix as the platform would store it, with when it arrived."""

    device_id: str
    ts: float
    lon: float
    lat: float
    acc: float
    src: str
    received_at: float


@dataclass(frozen=True)
class TraceEvent:
    device_id: str
    ts: float
    type: str
    received_at: float
    detail: Any = None  # the event's `detail`, as sent


def _epoch(value: float | str) -> float:
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value)


def read_trace(publications: Iterable[Publication]) -> tuple[list[TraceFix], list[TraceEvent]]:
    """Decode tag fixes, batches, events and OwnTracks locations, sorted by device, then fix
    time, the order in which ingest evaluates them."""
    fixes: list[TraceFix] = []
    events: list[TraceEvent] = []
    for publication in publications:
        parts = publication.topic.split("/")
        if parts[0] == "owntracks":
            message = json.loads(publication.payload)
            if message.get("_type") != "location" or message.get("t") == "p":
                continue  # a ping is not a fresh position (ingest/owntracks.py)
            fixes.append(
                TraceFix(
                    publication.device_id,
                    float(message["tst"]),
                    float(message["lon"]),
                    float(message["lat"]),
                    float(message.get("acc", math.nan)),  # no acc: unknown, never evidence
                    "gps",
                    publication.at,
                )
            )
            continue
        channel = parts[-1]
        if channel == "fix":
            message = json.loads(publication.payload)
            for fix in message.get("fixes", [message]):
                fixes.append(
                    TraceFix(
                        publication.device_id,
                        _epoch(fix["ts"]),
                        float(fix["lon"]),
                        float(fix["lat"]),
                        float(fix["acc"]),
                        fix.get("src", "gps"),
                        publication.at,
                    )
                )
        elif channel == "event":
            message = json.loads(publication.payload)
            for event in message.get("events", [message]):
                events.append(
                    TraceEvent(
                        publication.device_id,
                        _epoch(event["ts"]),
                        event["type"],
                        publication.at,
                        event.get("detail"),
                    )
                )
    fixes.sort(key=lambda f: (f.device_id, f.ts))
    events.sort(key=lambda e: (e.device_id, e.ts))
    return fixes, events
