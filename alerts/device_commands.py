"""Commands to devices: the vocabulary, what each may carry, and how each is written on the wire.

Pure (no I/O), so the API (validation), the store (a phone's HTTP answer), the sender in the
dispatcher (MQTT) and the simulators all read one definition. Tags get the contract's own
message on `em/v1/{id}/cmd`; OwnTracks phones get the apps' own `_type: cmd` objects, because
the apps understand nothing else (owntracks/booklet, docs/tech/json.md "_type=cmd" and
docs/features/remoteconfig.md). The apps have no vibrate or beep command, so those are refused
for phones rather than sent into the void; `set_configuration` is the apps' own remote
configuration and means nothing to a tag. A text `message` is the iOS app's `action` command
with a `notification` (a local notification with sound, kept in the app's history: owntracks/ios
OwnTracksAppDelegate.m `performAction:`); the Android app has no such command and ignores it
(docs/phones.md "Victim phones" says what that means for a victim).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

LOCATE_NOW: Final = "locate_now"
SET_INTERVAL: Final = "set_interval"
VIBRATE: Final = "vibrate"
BEEP: Final = "beep"
MESSAGE: Final = "message"
SET_CONFIGURATION: Final = "set_configuration"

COMMAND_TYPES: Final = (LOCATE_NOW, SET_INTERVAL, VIBRATE, BEEP, MESSAGE, SET_CONFIGURATION)
TAG_COMMANDS: Final = frozenset({LOCATE_NOW, SET_INTERVAL, VIBRATE, BEEP, MESSAGE})
PHONE_COMMANDS: Final = frozenset({LOCATE_NOW, SET_INTERVAL, SET_CONFIGURATION, MESSAGE})

STATES: Final = ("queued", "sent", "acknowledged", "failed", "expired", "cancelled")
OPEN_STATES: Final = frozenset({"queued", "sent"})
ACK_STATUSES: Final = frozenset({"done", "failed"})

MAX_INTERVAL_S: Final = 86_400
MAX_DURATION_S: Final = 7 * 86_400
MAX_BUZZ_S: Final = 60
MAX_MESSAGE_CHARS: Final = 500
MAX_CONFIGURATION_KEYS: Final = 100
# OwnTracks `monitoring` modes (booklet docs/tech/json.md, configuration): 1 significant, 2 move.
OWNTRACKS_SIGNIFICANT: Final = 1
OWNTRACKS_MOVE: Final = 2
# Configuration keys a remote command must never change: where the phone sends, as whom, and
# whether it obeys commands at all. A typo there would cut the wearer off the platform.
OWNTRACKS_LOCKED_KEYS: Final = frozenset(
    {
        "host",
        "port",
        "username",
        "password",
        "clientId",
        "deviceId",
        "pubTopicBase",
        "url",
        "mode",
        "tls",
        "auth",
        "cmd",
        "remoteConfiguration",
        "encryptionKey",
    }
)


class CommandRefused(ValueError):
    """A command the device cannot be given, with the reason (the API answers 422)."""


def _whole(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a whole number of seconds"
        raise CommandRefused(msg)
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        msg = f"{name} must be a whole number of seconds"
        raise CommandRefused(msg)
    number = int(value)
    if not low <= number <= high:
        msg = f"{name} must be between {low} and {high}"
        raise CommandRefused(msg)
    return number


def _only(args: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        msg = f"unknown argument(s): {', '.join(extra)}"
        raise CommandRefused(msg)


def check_command(
    kind: str, command_type: str, args: Mapping[str, Any], *, osmand: bool = False
) -> dict[str, Any]:
    """The arguments as they will be stored, or CommandRefused saying why not.

    ``kind`` is the device's (`tag`, `phone`, `victim_phone`). ``osmand``: the phone runs
    Traccar Client, whose OsmAnd protocol only carries positions up to the server; there is no
    way down to it, so a command would be shown as sent and never arrive. It is refused."""
    if command_type not in COMMAND_TYPES:
        msg = f"unknown command type {command_type!r}"
        raise CommandRefused(msg)
    if osmand:
        msg = (
            "a Traccar Client (OsmAnd) phone cannot receive commands: its protocol only sends"
            " positions to the server; use OwnTracks on this phone to command it"
        )
        raise CommandRefused(msg)
    allowed = TAG_COMMANDS if kind == "tag" else PHONE_COMMANDS
    if command_type not in allowed:
        who = "a tag" if kind == "tag" else "an OwnTracks phone"
        msg = f"{command_type} cannot be sent to {who} (it has no such command)"
        raise CommandRefused(msg)
    if command_type == LOCATE_NOW:
        _only(args, set())
        return {}
    if command_type == SET_INTERVAL:
        _only(args, {"interval_s", "duration_s"})
        if "interval_s" not in args:
            msg = "set_interval needs interval_s"
            raise CommandRefused(msg)
        out = {"interval_s": _whole("interval_s", args["interval_s"], 1, MAX_INTERVAL_S)}
        if args.get("duration_s") is not None:
            out["duration_s"] = _whole("duration_s", args["duration_s"], 1, MAX_DURATION_S)
        return out
    if command_type in (VIBRATE, BEEP):
        _only(args, {"duration_s"})
        if args.get("duration_s") is None:
            return {}
        return {"duration_s": _whole("duration_s", args["duration_s"], 1, MAX_BUZZ_S)}
    if command_type == MESSAGE:
        _only(args, {"text"})
        text = args.get("text")
        if not isinstance(text, str) or not text.strip():
            msg = "message needs a non-empty text"
            raise CommandRefused(msg)
        if len(text) > MAX_MESSAGE_CHARS:
            msg = f"text is longer than {MAX_MESSAGE_CHARS} characters"
            raise CommandRefused(msg)
        return {"text": text}
    _only(args, {"configuration"})
    configuration = args.get("configuration")
    if not isinstance(configuration, dict) or not configuration:
        msg = "set_configuration needs a non-empty configuration object"
        raise CommandRefused(msg)
    if len(configuration) > MAX_CONFIGURATION_KEYS:
        msg = f"at most {MAX_CONFIGURATION_KEYS} configuration keys"
        raise CommandRefused(msg)
    locked = sorted(set(configuration) & OWNTRACKS_LOCKED_KEYS)
    if locked:
        msg = f"these settings cannot be changed remotely: {', '.join(locked)}"
        raise CommandRefused(msg)
    return {"configuration": {k: v for k, v in configuration.items() if k != "_type"}}


def tag_message(
    command_id: int, command_type: str, args: Mapping[str, Any], ts: float, expires: float
) -> dict[str, Any]:
    """The contract's command object for `em/v1/{id}/cmd`. The id is a string on the wire (the
    contract's), and the tag answers with it on `em/v1/{id}/ack`."""
    return {
        "id": str(command_id),
        "type": command_type,
        "ts": round(ts, 3),
        "args": dict(args),
        "expires": round(expires, 3),
    }


def owntracks_message(
    command_type: str, args: Mapping[str, Any], normal_interval_s: int
) -> dict[str, Any]:
    """The OwnTracks apps' own `cmd` object for a command a phone may be given.

    `set_interval` becomes remote configuration: move mode (`monitoring: 2`, which reports
    continuously) at `locatorInterval` / `moveModeLocatorInterval` seconds; going back to the
    device's normal interval (``normal_interval_s``, the platform's expected interval) is
    significant-change mode (`monitoring: 1`, the apps' everyday mode) with that interval. The
    apps cannot time a change out themselves, so a pursuit's end is a second command."""
    if command_type == LOCATE_NOW:
        return {"_type": "cmd", "action": "reportLocation"}
    if command_type == SET_INTERVAL:
        interval = int(args["interval_s"])
        pursuit = interval < normal_interval_s
        configuration: dict[str, Any] = {
            "_type": "configuration",
            "monitoring": OWNTRACKS_MOVE if pursuit else OWNTRACKS_SIGNIFICANT,
            "locatorInterval": interval,
        }
        if pursuit:
            configuration["moveModeLocatorInterval"] = interval
        return {"_type": "cmd", "action": "setConfiguration", "configuration": configuration}
    if command_type == SET_CONFIGURATION:
        configuration = {"_type": "configuration", **dict(args["configuration"])}
        return {"_type": "cmd", "action": "setConfiguration", "configuration": configuration}
    if command_type == MESSAGE:
        # iOS only: shown as a notification (owntracks/ios `performAction:` reads
        # `notification`); Android logs an unknown action.
        return {"_type": "cmd", "action": "action", "notification": str(args["text"])}
    msg = f"{command_type} has no OwnTracks form"
    raise CommandRefused(msg)


__all__ = [
    "COMMAND_TYPES",
    "STATES",
    "CommandRefused",
    "check_command",
    "owntracks_message",
    "tag_message",
]
