"""The pure command vocabulary, the wire form of commands and the simulated tag's obedience,
without broker or database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tagwatch.alerts import device_commands as dc
from tagwatch.alerts.command_sender import wire
from tagwatch.alerts.victim_protection import VICTIM_NOTICES
from tagwatch.simulators.obedience import Obedience
from tagwatch.store.commands import Sendable

FIXTURES = Path(__file__).parents[1] / "fixtures" / "owntracks_commands"


def test_the_tag_message_is_the_contracts_object():
    message = dc.tag_message(42, "set_interval", {"interval_s": 15}, 1000.0, 1600.0)
    assert message == {
        "id": "42",
        "type": "set_interval",
        "ts": 1000.0,
        "args": {"interval_s": 15},
        "expires": 1600.0,
    }


def test_phones_get_no_command_the_apps_lack():
    for command in ("vibrate", "beep"):
        with pytest.raises(dc.CommandRefused):
            dc.owntracks_message(command, {}, 60)


def test_a_message_to_a_phone_is_the_ios_apps_action_notification():
    """The iOS app's own form (fixture from owntracks/ios `performAction:`)."""
    fixture = json.loads((FIXTURES / "action_notification.json").read_text())
    text = fixture["notification"]
    assert dc.check_command("victim_phone", "message", {"text": text}) == {"text": text}
    assert dc.owntracks_message("message", {"text": text}, 60) == fixture


def test_a_pursuit_on_a_phone_is_move_mode_and_the_return_significant_mode():
    start = dc.owntracks_message("set_interval", {"interval_s": 15, "duration_s": 60}, 300)
    back = dc.owntracks_message("set_interval", {"interval_s": 300}, 300)
    assert start["configuration"]["monitoring"] == dc.OWNTRACKS_MOVE
    assert back["configuration"] == {
        "_type": "configuration",
        "monitoring": dc.OWNTRACKS_SIGNIFICANT,
        "locatorInterval": 300,
    }


def test_a_repeated_command_is_answered_again_but_applied_once():
    tag = Obedience(60.0)
    command = {"id": "9", "type": "set_interval", "args": {"interval_s": 15, "duration_s": 30}}
    first = tag.handle(json.dumps(command).encode(), now=100.0)
    again = tag.handle(json.dumps(command).encode(), now=120.0)
    assert first is not None and again is not None
    assert (first["status"], again["status"]) == ("done", "done")
    assert len(tag.log) == 1
    assert tag.interval(125.0) == 15.0
    assert tag.interval(130.0) == 60.0  # the duration counts from the first, it ends by itself


def test_an_unknown_command_is_answered_failed_and_a_silent_tag_answers_nothing():
    assert Obedience(60.0).handle(b'{"id": "1", "type": "self_destruct"}', 0.0)["status"] == (
        "failed"
    )
    assert Obedience(60.0, answer=False).handle(b'{"id": "1", "type": "beep"}', 0.0) is None


def test_a_victim_notice_goes_to_the_phones_command_topic_as_the_ios_notification():
    text = VICTIM_NOTICES["victim_proximity_warning"]
    now = datetime.now(UTC)
    topic, payload = wire(
        Sendable(7, "vphone-1", "message", {"text": text}, "victim_phone",
                 "owntracks/jane/vphone-1", 300, now, now)
    )  # fmt: skip
    assert topic == "owntracks/jane/vphone-1/cmd"
    fixture = json.loads((FIXTURES / "action_notification.json").read_text())
    assert json.loads(payload) == fixture
