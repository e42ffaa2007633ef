"""Simulated tags that obey commands: they listen on `em/v1/{id}/cmd`, change their reporting
interval, report at once when asked, and answer on `em/v1/{id}/ack` (docs/contract-extensions.md,
"Commands to devices").

`Obedience` is the tag's side of the protocol without the network (what interval now, what to
answer), so the live publisher (`simulators/publisher.py`) and the end-to-end tests share it;
`listen` wires it to a paho client: it subscribes in on-connect, so a reconnect subscribes again,
and answers from the network thread. A repeated command (the platform sends again until it hears
an answer) is answered again but applied once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from tagwatch.alerts import device_commands as dc


@dataclass
class Obedience:
    """One tag's reporting interval as the platform's commands set it."""

    normal_interval_s: float
    answer: bool = True  # False: a tag that never answers (the expiry test)
    interval_s: float = 0.0
    until: float | None = None  # a timed set_interval reverts by itself then
    locate_now: bool = False
    seen: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # what it was told, in order

    def __post_init__(self) -> None:
        self.interval_s = self.interval_s or self.normal_interval_s

    def interval(self, now: float) -> float:
        if self.until is not None and now >= self.until:
            self.interval_s, self.until = self.normal_interval_s, None
        return self.interval_s

    def handle(self, payload: bytes, now: float) -> dict[str, Any] | None:
        """Apply one command; the answer to publish (None: a tag told not to answer)."""
        try:
            command = json.loads(payload)
            command_id = str(command["id"])
        except (ValueError, KeyError, TypeError):
            return None  # not a command: nothing to answer to
        if command_id not in self.seen:
            self.seen[command_id] = self._apply(command, now)
            self.log.append(command)
        status, detail = self.seen[command_id]
        if not self.answer:
            return None
        return {"id": command_id, "ts": round(time.time(), 3), "status": status, "detail": detail}

    def _apply(self, command: dict[str, Any], now: float) -> tuple[str, str | None]:
        kind, args = command.get("type"), command.get("args") or {}
        if command.get("expires") is not None and float(command["expires"]) < time.time():
            return "failed", "expired before it arrived"
        if kind == dc.SET_INTERVAL:
            try:
                self.interval_s = float(args["interval_s"])
            except (KeyError, TypeError, ValueError):
                return "failed", "interval_s missing"
            duration = args.get("duration_s")
            self.until = None if duration is None else now + float(duration)
            return "done", f"interval {self.interval_s:g} s"
        if kind == dc.LOCATE_NOW:
            self.locate_now = True
            return "done", None
        if kind in (dc.VIBRATE, dc.BEEP, dc.MESSAGE):
            return "done", None
        return "failed", f"unknown command type {kind!r}"


def listen(
    client: mqtt.Client,
    device_id: str,
    obedience: Obedience,
    changed: Callable[[], None] = lambda: None,
    lock: threading.Lock | None = None,
) -> None:
    """Subscribe the tag's client to its command topic (on every connect) and obey what comes;
    ``changed`` is called after each command, so a publishing loop can re-plan its next fix."""
    topic = f"em/v1/{device_id}/cmd"
    guard = lock or threading.Lock()

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not getattr(rc, "is_failure", False):
            c.subscribe(topic, qos=1)

    def on_message(c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.topic != topic:
            return
        with guard:
            answer = obedience.handle(bytes(message.payload), time.monotonic())
        if answer is not None:
            c.publish(f"em/v1/{device_id}/ack", json.dumps(answer), qos=1)
        changed()

    client.on_connect = on_connect
    client.on_message = on_message


__all__ = ["Obedience", "listen"]
