"""Commands to devices through the API: validation per device kind, states, audit, scope; and
the phones' HTTP answer (`store.commands.take_pending_for_http`) in the apps' own format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tagwatch.store import commands
from tests.support import fresh_id

pytestmark = pytest.mark.integration

V1 = "/api/v1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "owntracks_commands"


@pytest.fixture(scope="module")
def world(api, login, settings) -> dict:
    admin = login("admin", ["*"])
    region, other = fresh_id("cmd-r"), fresh_id("cmd-o")
    for r in (region, other):
        assert (
            api.post(f"{V1}/regions", json={"id": r, "name": r}, headers=admin).status_code == 201
        )
    tag, phone, far = fresh_id("cmdtag"), fresh_id("cmdphone"), fresh_id("cmdfar")
    traccar = fresh_id("cmdtraccar")
    topic = f"owntracks/{fresh_id('u')}/{fresh_id('d')}"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag'), (%s, 'tag')", (tag, far))
        conn.execute(
            "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s)"
            " VALUES (%s, 'phone', %s, 300)",
            (phone, topic),
        )
        conn.execute(
            "INSERT INTO devices (id, kind, osmand) VALUES (%s, 'phone', true)", (traccar,)
        )
        subjects = {}
        for name, r, device in (("near", region, tag), ("far", other, far)):
            sid = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id", (name, r)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, 'offender', tstzrange(now() - interval '1 day', NULL))",
                (device, sid),
            )
            subjects[name] = sid
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(now() - interval '1 day', NULL))",
            (traccar, subjects["near"]),
        )
    return {
        "traccar": traccar,
        "region": region,
        "tag": tag,
        "phone": phone,
        "far": far,
        "subject": subjects["near"],
        "operator": login("operator", [region]),
        "tracer": login("tracer", [region]),
    }


def test_operator_queues_a_command_and_reads_its_state(api, settings, world):
    sent = api.post(
        f"{V1}/devices/{world['tag']}/commands",
        json={"type": "set_interval", "args": {"interval_s": 15, "duration_s": 600}},
        headers=world["operator"],
    )
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert body["state"] == "queued"
    assert body["args"] == {"interval_s": 15, "duration_s": 600}
    assert body["origin"].startswith("user:operator")
    one = api.get(f"{V1}/devices/{world['tag']}/commands/{body['id']}", headers=world["tracer"])
    assert one.status_code == 200
    assert one.json()["id"] == body["id"]
    listed = api.get(f"{V1}/devices/{world['tag']}/commands", headers=world["tracer"]).json()
    assert listed[0]["id"] == body["id"]
    with psycopg.connect(settings.database_url) as conn:
        audit = conn.execute(
            "SELECT subject_id, detail FROM audit_log WHERE action = 'device_command'"
            " AND detail->>'command_id' = %s",
            (str(body["id"]),),
        ).fetchone()
    assert audit is not None
    assert audit[0] == world["subject"]
    assert audit[1]["type"] == "set_interval"


@pytest.mark.parametrize(
    ("device", "command", "reason"),
    [
        ("phone", {"type": "vibrate"}, "no such command"),
        ("phone", {"type": "beep"}, "no such command"),
        ("tag", {"type": "set_configuration", "args": {"configuration": {"x": 1}}}, "no such"),
        ("tag", {"type": "set_interval", "args": {}}, "needs interval_s"),
        ("tag", {"type": "set_interval", "args": {"interval_s": 0}}, "between"),
        ("tag", {"type": "set_interval", "args": {"interval_s": 1.5}}, "whole number"),
        ("tag", {"type": "message", "args": {"text": "x" * 501}}, "longer than"),
        ("tag", {"type": "locate_now", "args": {"now": True}}, "unknown argument"),
        (
            "phone",
            {"type": "set_configuration", "args": {"configuration": {"host": "evil.example"}}},
            "cannot be changed remotely: host",
        ),
    ],
)
def test_a_command_the_device_cannot_take_is_422(api, world, device, command, reason):
    answer = api.post(
        f"{V1}/devices/{world[device]}/commands", json=command, headers=world["operator"]
    )
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"]


def test_an_unknown_type_is_422_and_tracers_may_not_send(api, world):
    unknown = api.post(
        f"{V1}/devices/{world['tag']}/commands",
        json={"type": "self_destruct"},
        headers=world["operator"],
    )
    assert unknown.status_code == 422
    refused = api.post(
        f"{V1}/devices/{world['tag']}/commands",
        json={"type": "locate_now"},
        headers=world["tracer"],
    )
    assert refused.status_code == 403


def test_another_regions_device_is_a_missing_one(api, world):
    far = api.post(
        f"{V1}/devices/{world['far']}/commands",
        json={"type": "locate_now"},
        headers=world["operator"],
    )
    assert far.status_code == 404
    assert (
        api.get(f"{V1}/devices/{world['far']}/commands", headers=world["operator"]).status_code
        == 404
    )


def test_a_phones_http_answer_carries_its_commands_in_the_apps_format(api, settings, world):
    for command in (
        {"type": "locate_now"},
        {"type": "set_interval", "args": {"interval_s": 15}},
        {"type": "set_interval", "args": {"interval_s": 300}},
        {
            "type": "set_configuration",
            "args": {"configuration": {"_type": "configuration", "locatorDisplacement": 50}},
        },
    ):
        answer = api.post(
            f"{V1}/devices/{world['phone']}/commands", json=command, headers=world["operator"]
        )
        assert answer.status_code == 201, answer.text
    with psycopg.connect(settings.database_url) as conn:
        # the sender may have published one on MQTT already: an HTTP-mode app still gets it
        conn.execute(
            "UPDATE device_commands SET state = 'sent', channel = 'mqtt', send_count = 1"
            " WHERE id = (SELECT min(id) FROM device_commands WHERE device_id = %s)",
            (world["phone"],),
        )
        taken = commands.take_pending_for_http(conn, world["phone"])
        again = commands.take_pending_for_http(conn, world["phone"])
        states = conn.execute(
            "SELECT DISTINCT state, channel FROM device_commands WHERE device_id = %s",
            (world["phone"],),
        ).fetchall()
    expected = [
        json.loads((FIXTURES / name).read_text())
        for name in (
            "report_location.json",
            "set_configuration_move.json",
            "set_configuration_significant.json",
            "set_configuration_displacement.json",
        )
    ]
    assert taken == expected
    assert again == []
    assert states == [("sent", "http")]


def test_an_expired_command_is_shown_expired(api, settings, world):
    queued = api.post(
        f"{V1}/devices/{world['tag']}/commands",
        json={"type": "beep", "expires_in_s": 10},
        headers=world["operator"],
    ).json()
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "UPDATE device_commands SET created_at = created_at - interval '1 minute',"
            " expires_at = now() - interval '1 second' WHERE id = %s",
            (queued["id"],),
        )
        assert commands.expire_due(conn) >= 1
    shown = api.get(f"{V1}/devices/{world['tag']}/commands/{queued['id']}", headers=world["tracer"])
    assert shown.json()["state"] == "expired"
    assert shown.json()["detail"] == "never sent before it expired"
    assert datetime.fromisoformat(shown.json()["expired_at"]) <= datetime.now(UTC)


def test_the_cli_queues_a_command_like_the_api(service_env, settings, world):
    import os
    import subprocess
    import sys

    env = {**os.environ, **service_env, "TAGWATCH_ENVIRONMENT": "test"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tagwatch",
            "device",
            "command",
            world["tag"],
            "set_interval",
            "--arg",
            "interval_s=15",
            "--arg",
            "duration_s=900",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["args"] == {"interval_s": 15, "duration_s": 900}
    assert shown["state"] == "queued"
    refused = subprocess.run(
        [sys.executable, "-m", "tagwatch", "device", "command", world["phone"], "beep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "no such command" in refused.stderr
    with psycopg.connect(settings.database_url) as conn:
        audited = conn.execute(
            "SELECT role FROM audit_log WHERE action = 'device_command'"
            " AND detail->>'command_id' = %s",
            (str(shown["command_id"]),),
        ).fetchone()
    assert audited == ("admin",)


def test_a_traccar_client_phone_is_refused_commands_with_the_reason(api, settings, world):
    """Traccar Client's OsmAnd protocol only goes up: a command would show `sent` and never
    arrive, so the API refuses it, for every command type, and nothing is queued."""
    for command in (
        {"type": "locate_now"},
        {"type": "set_interval", "args": {"interval_s": 15}},
        {"type": "message", "args": {"text": "call your officer"}},
    ):
        refused = api.post(
            f"{V1}/devices/{world['traccar']}/commands", json=command, headers=world["operator"]
        )
        assert refused.status_code == 422, refused.text
        assert "Traccar Client" in refused.json()["detail"]
    with psycopg.connect(settings.database_url) as conn:
        queued = conn.execute(
            "SELECT count(*) FROM device_commands WHERE device_id = %s", (world["traccar"],)
        ).fetchone()
    assert queued == (0,)
