"""OwnTracks over the real broker, with a phone's own account: every fixture payload
(tests/fixtures/owntracks) is published on its sub-topic and each one is accounted for, in
fixes, phone_messages, dead letters or the ignored counter; none silently lost. And what
`tagwatch device add --kind phone` prints works as printed."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import nacl.secret
import psycopg
import pytest

from tagwatch.ingest.broker_accounts import BrokerAdmin
from tagwatch.ingest.provisioning import provision_device
from tagwatch.store.devices import add_assignment
from tagwatch.store.fix_columns import value
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.webhook_secrets import SecretBox
from tests.conftest import IngestProcess
from tests.ingest.test_owntracks import CASES, FIXTURES
from tests.support import connect, count, fresh_id, publish_all, wait_for

# the fixtures were recorded between 2014 and 2025; this ingest accepts them as late uploads
CENTURY_S = str(100 * 365 * 86400)


@pytest.fixture
def lenient_ingest(service_env, tmp_path):
    env = {**service_env, "TAGWATCH_MAX_FIX_LATENESS_S": CENTURY_S}
    process = IngestProcess(env, fresh_id("ingest-owntracks"), tmp_path)
    process.start_and_wait()
    yield process
    process.end()


def expected() -> Counter[str]:
    """What the fixtures must leave behind, from cases.json."""
    out: Counter[str] = Counter()
    for case in CASES.values():
        outcome = case["outcome"]
        if outcome.startswith("dead:"):
            out["dead"] += 1
        elif outcome == "ignored":
            out["ignored"] += 1
        else:
            out["phone_messages"] += 1
            out["fixes"] += "fix" in outcome
    return out


def test_every_owntracks_fixture_over_the_broker_is_accounted_for(settings, lenient_ingest, api):
    user = fresh_id("user")
    device_id = fresh_id("phone")
    base = f"owntracks/{user}/{device_id}"
    sealed = SecretBox(settings.webhook_secret_key).seal("123")  # the Android app's test key
    with psycopg.connect(settings.database_url) as conn:
        password = provision_device(
            conn,
            BrokerAdmin.from_url(settings.mqtt_admin_url),
            device_id,
            "phone",
            base,
            payload_key_sealed=sealed,
        )
    phone = connect(settings.mqtt_device_url, device_id, password, client_id=device_id)
    messages = []
    platform = []  # what only the platform publishes: its commands on the phone's cmd topic
    for name, case in CASES.items():
        topic = f"{base}/{case['sub_topic']}" if case["sub_topic"] else base
        if case["sub_topic"] == "cmd":
            # the broker refuses a device's publish on its own command topic
            # (tests/api/test_device_commands.py): it is the dispatcher's to send
            platform.append((topic, (FIXTURES / name).read_bytes()))
            continue
        messages.append((topic, (FIXTURES / name).read_bytes()))
    publish_all(phone, messages)
    dispatcher = connect(settings.mqtt_dispatcher_url, "tagwatch-dispatcher", None)
    publish_all(dispatcher, platform)
    dispatcher.disconnect()
    # the retained clear, as a client deletes a retained location (`mosquitto_pub -r -n`)
    phone.publish(base, b"", qos=1, retain=True).wait_for_publish(30)
    phone.disconnect()
    want = expected()
    want["ignored"] += 1
    db = settings.database_url

    def phone_rows() -> int:
        return count(db, "SELECT count(*) FROM phone_messages WHERE device_id = %s", (device_id,))

    def ignored() -> int:
        return count(
            db,
            "SELECT coalesce(sum(value), 0) FROM ingest_counters"
            " WHERE worker = %s AND metric = 'messages_ignored_total'",
            (lenient_ingest.client_id,),
        )

    def dead() -> int:
        return count(
            db,
            "SELECT coalesce(sum(total), 0) FROM dead_letter_tally WHERE sender = %s",
            (f"owntracks/{user}",),
        )

    assert wait_for(
        lambda: (
            (phone_rows(), ignored(), dead())
            == (want["phone_messages"], want["ignored"], want["dead"])
        ),
        30,
    ), (phone_rows(), ignored(), dead(), want, lenient_ingest.log()[-3000:])
    # two fixtures are the same fix (numbers as numbers, and as strings): stored once
    fixes = count(db, "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,))
    assert fixes == want["fixes"] - 1
    assert (
        count(
            db,
            f"SELECT count(*) FROM fixes f WHERE device_id = %s AND {value('acc', 'f')} IS NULL",
            (device_id,),
        )
        == 2
    )  # the location and the transition without `acc`: unknown, not 100 km
    with psycopg.connect(db) as conn:
        reasons = sorted(
            r[0]
            for r in conn.execute(
                "SELECT reason FROM dead_letters WHERE sender = %s", (f"owntracks/{user}",)
            )
        )
        kinds = Counter(
            r[0]
            for r in conn.execute(
                "SELECT type FROM phone_messages WHERE device_id = %s", (device_id,)
            )
        )
        encrypted = conn.execute(
            "SELECT count(*) FROM phone_messages WHERE device_id = %s AND encrypted"
            " AND monitoring = 2",
            (device_id,),
        ).fetchone()
        status = conn.execute(
            "SELECT status FROM device_status WHERE device_id = %s", (device_id,)
        ).fetchone()
    assert reasons == ["decryption_failed", "schema_violation"]
    assert kinds["transition"] == 3 and kinds["lwt"] == 1 and kinds["status"] == 1
    assert encrypted == (1,)
    assert status == ("offline",)
    metrics = api.get("/metrics").text
    assert 'tagwatch_ingest_messages_ignored_total{reason="owntracks_retained_clear"}' in metrics
    assert 'tagwatch_ingest_messages_ignored_total{reason="owntracks_cmd_topic"}' in metrics


def test_device_add_phone_prints_an_owntracks_line_that_is_stored(
    settings, services_dir, running_ingest, tmp_path
):
    device_id = fresh_id("phone")
    topic = f"owntracks/{fresh_id('user')}/{device_id}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tagwatch",
            "--env-file",
            str(services_dir / "env"),
            "device",
            "add",
            device_id,
            "--kind",
            "phone",
            "--owntracks-topic",
            topic,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    line = printed["try"]
    assert f"-t {topic} " in line and '\\"_type\\": \\"location\\"' in line
    assert f"-i {device_id} " in line and "--cafile" in line
    key = printed["encryption_key"]
    assert len(key) == 32 and key in result.stderr  # also in the app's settings line
    with psycopg.connect(settings.database_url) as conn:
        (sealed,) = conn.execute(
            "SELECT payload_key_sealed FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
    assert key not in sealed and SecretBox(settings.webhook_secret_key).open(sealed) == key
    published = subprocess.run(line, shell=True, capture_output=True, text=True, check=False)  # noqa: S602
    assert published.returncode == 0, published.stderr
    db = settings.database_url
    assert wait_for(
        lambda: count(db, "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,)) == 1
    )
    assert count(db, "SELECT count(*) FROM dead_letters WHERE topic = %s", (topic,)) == 0

    # The phone turns encryption on with the key it was given: the app pads the passphrase with
    # zeros to 32 bytes and sends base64(nonce + secretbox) as `_type: encrypted`.
    box = nacl.secret.SecretBox(key.encode().ljust(32, b"\0"))
    clear = {"_type": "location", "lat": 51.5, "lon": -0.1, "acc": 9, "tst": int(time.time()) - 30}
    sealed_fix = base64.b64encode(box.encrypt(json.dumps(clear).encode())).decode()
    phone = connect(settings.mqtt_device_url, device_id, printed["password"], client_id=device_id)
    payload = json.dumps({"_type": "encrypted", "data": sealed_fix}).encode()
    publish_all(phone, [(topic, payload)])
    phone.disconnect()
    assert wait_for(
        lambda: count(db, "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,)) == 2
    )
    assert count(db, "SELECT count(*) FROM dead_letters WHERE topic = %s", (topic,)) == 0


def test_device_add_phone_without_its_topic_is_refused(services_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tagwatch", "--env-file", str(services_dir / "env"), "device",
         "add", fresh_id("phone"), "--kind", "phone"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--owntracks-topic" in result.stderr


def test_the_api_shows_a_phones_encryption_key_once_and_a_tag_has_none(api, login):
    headers = login("admin", ["*"])
    device_id = fresh_id("phone")
    body = {"id": device_id, "kind": "phone", "owntracks_topic": f"owntracks/u/{device_id}"}
    created = api.post("/api/v1/devices", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert len(created.json()["encryption_key"]) == 32
    assert "encryption_key" not in api.get(f"/api/v1/devices/{device_id}", headers=headers).json()
    tag = api.post("/api/v1/devices", json={"id": fresh_id("tag")}, headers=headers)
    assert tag.status_code == 201 and tag.json()["encryption_key"] is None


def test_a_held_phones_own_state_raises_the_phone_alerts(settings, provision, running_ingest):
    """Battery from `batt`, monitoring mode from `m`, through ingest and the real engine; a
    ping and a location without `acc` are communication, never zone evidence."""
    device_id = fresh_id("phone")
    base = f"owntracks/{fresh_id('user')}/{device_id}"
    password = provision(device_id, "phone", base)
    with psycopg.connect(settings.database_url) as conn:
        ensure_region(conn, "owntracks-test", "owntracks-test")
        subject = add_subject(conn, name=fresh_id("s"), region_id="owntracks-test")
        add_assignment(
            conn, device_id, subject, "offender", datetime.now(UTC) - timedelta(hours=1), None
        )
    phone = connect(settings.mqtt_device_url, device_id, password, client_id=device_id)
    now = int(time.time())
    location = {"_type": "location", "lat": 51.0, "lon": 0.0, "tst": now - 60, "acc": 8,
                "batt": 8, "bs": 1, "m": -1, "conn": "m", "tid": "p1"}  # fmt: skip
    ping = {**location, "t": "p", "tst": now, "batt": 7}
    publish_all(phone, [(base, json.dumps(location).encode()), (base, json.dumps(ping).encode())])
    phone.disconnect()

    def alerts() -> set[str]:
        with psycopg.connect(settings.database_url) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT type FROM alerts WHERE subject_id = %s AND cleared_at IS NULL",
                    (subject,),
                )
            }

    want = {"battery_low", "battery_critical", "phone_monitoring_degraded"}
    assert wait_for(lambda: alerts() == want, 20), alerts()
    db = settings.database_url
    assert count(db, "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,)) == 1
