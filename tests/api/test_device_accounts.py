"""The device-accounts port (ingest/device_accounts.py) behind the API's device routes and
`tagwatch device rotate`: on an EMQX site (TAGWATCH_BROKER_KIND=emqx) registering, rotating and
revoking call no broker, and EMQX's own queries (store/emqx_auth.py, run as EMQX runs them, as its
database account) follow the row; on a Mosquitto site the same routes reach the real broker's
dynamic security. Real PostgreSQL and Mosquitto, no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from tagwatch.api.app import create_app
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.store import emqx_auth
from tests.api.test_http_intake import owntracks_post
from tests.support import fresh_id, wait_for

pytestmark = pytest.mark.integration

V1 = "/api/v1"


def _dead_admin_url(settings: Settings) -> str:
    """The admin account's URL on a port nobody listens on: any dynamic-security call fails."""
    port = MqttEndpoint.parse(settings.mqtt_admin_url).port
    return settings.mqtt_admin_url.replace(f":{port}", ":9", 1)


@pytest.fixture(scope="module")
def emqx_settings(settings):
    return settings.model_copy(
        update={"broker_kind": "emqx", "mqtt_admin_url": _dead_admin_url(settings)}
    )


@pytest.fixture(scope="module")
def admin(login):
    return login("admin", ["*"])


@pytest.fixture(scope="module")
def emqx_db(settings):
    """A connection as EMQX's database account (SELECT on four columns of `devices`)."""
    with psycopg.connect(settings.database_url, autocommit=True) as owner:
        emqx_auth.ensure_role(owner, None)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(emqx_auth.EMQX_ROLE)))
        yield conn


def emqx_accepts(conn, device_id: str, password: str, client_id: str | None = None) -> bool:
    """EMQX's CONNECT: its authentication query, then sha256(password + salt) in hex against
    password_hash (password_hash_algorithm sha256, salt_position suffix)."""
    rows = conn.execute(
        emqx_auth.as_psycopg(emqx_auth.AUTHN_QUERY),
        {"username": device_id, "clientid": client_id or device_id},
    ).fetchall()
    return any(
        hashlib.sha256((password + salt).encode()).hexdigest() == digest and not superuser
        for digest, salt, superuser in rows
    )


def emqx_rules(conn, device_id: str) -> list[tuple[str, str, str]]:
    return conn.execute(
        emqx_auth.as_psycopg(emqx_auth.AUTHZ_QUERY), {"username": device_id, "clientid": device_id}
    ).fetchall()


def test_an_emqx_site_provisions_with_the_row_alone(settings, emqx_settings, admin, emqx_db):
    # the same dead admin URL on a Mosquitto site: the broker call fails and nothing is written
    dead = settings.model_copy(update={"mqtt_admin_url": emqx_settings.mqtt_admin_url})
    with TestClient(create_app(dead)) as mosquitto_api:
        refused = fresh_id("emqx-api")
        answer = mosquitto_api.post(f"{V1}/devices", json={"id": refused}, headers=admin)
        assert answer.status_code == 503, answer.text
        assert mosquitto_api.get(f"{V1}/devices/{refused}", headers=admin).status_code == 404

    with TestClient(create_app(emqx_settings)) as api:
        tag = fresh_id("emqx-api")
        created = api.post(f"{V1}/devices", json={"id": tag}, headers=admin)
        assert created.status_code == 201, created.text
        first = created.json()["mqtt_password"]
        assert created.json()["mqtt_client_id"] == tag
        assert emqx_accepts(emqx_db, tag, first)
        assert not emqx_accepts(emqx_db, tag, first + "x")
        assert not emqx_accepts(emqx_db, tag, first, client_id=fresh_id("other"))
        assert ("allow", "publish", f"em/v1/{tag}/#") in emqx_rules(emqx_db, tag)

        phone = fresh_id("emqx-api-phone")
        topic = f"owntracks/{phone}/p1"
        body = {"id": phone, "kind": "phone", "owntracks_topic": topic}
        created = api.post(f"{V1}/devices", json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert emqx_accepts(emqx_db, phone, created.json()["mqtt_password"])
        assert ("allow", "subscribe", f"eq {topic}/cmd") in emqx_rules(emqx_db, phone)
        password = created.json()["mqtt_password"]
        now = int(time.time())
        assert owntracks_post(api, phone, password, now - 5).status_code == 200
        assert api.delete(f"{V1}/devices/{phone}/secret", headers=admin).status_code == 204
        assert owntracks_post(api, phone, password, now).status_code == 401  # HTTP intake too
        assert not emqx_accepts(emqx_db, phone, password)

        rotated = api.post(f"{V1}/devices/{tag}/secret", headers=admin)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["mqtt_password"]
        assert second != first
        assert rotated.json()["publish_topics"] == [f"em/v1/{tag}/#"]
        assert not emqx_accepts(emqx_db, tag, first)  # the old password fails
        assert emqx_accepts(emqx_db, tag, second)

        assert api.delete(f"{V1}/devices/{tag}/secret", headers=admin).status_code == 204
        assert not emqx_accepts(emqx_db, tag, second)
        assert emqx_rules(emqx_db, tag) == []  # an open session may do nothing more
        assert api.get(f"{V1}/devices/{tag}", headers=admin).status_code == 200  # row kept

        again = api.post(f"{V1}/devices/{tag}/secret", headers=admin)
        assert again.status_code == 200
        assert emqx_accepts(emqx_db, tag, again.json()["mqtt_password"])

        missing = fresh_id("nobody")
        assert api.post(f"{V1}/devices/{missing}/secret", headers=admin).status_code == 404
        assert api.delete(f"{V1}/devices/{missing}/secret", headers=admin).status_code == 404
        operator = api.delete(
            f"{V1}/devices/{tag}/secret", headers=_login_as(api, settings, "operator")
        )
        assert operator.status_code == 403


def _login_as(api: TestClient, settings: Settings, role: str) -> dict[str, str]:
    from tagwatch.api.security import hash_password

    username = fresh_id(role)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password("pass-word-1"), role, ["*"]),
        )
    token = api.post(
        f"{V1}/auth/token", data={"username": username, "password": "pass-word-1"}
    ).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


class Session:
    """A device's connection to the real broker: whether CONNECT was accepted, and whether the
    broker later ended it."""

    def __init__(self, settings: Settings, device_id: str, password: str) -> None:
        endpoint = MqttEndpoint.parse(settings.mqtt_device_url).with_account(device_id, password)
        self.client = new_client(endpoint, device_id, protocol=mqtt.MQTTv5)
        self.outcome: list[bool] = []
        self.answered = threading.Event()
        self.ended = threading.Event()

        def on_connect(_c, _u, _f, reason, _p) -> None:
            self.outcome.append(not reason.is_failure)
            self.answered.set()

        def on_disconnect(_c, _u, _f, _reason, _p) -> None:
            self.ended.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.connect(endpoint.host, endpoint.port)
        self.client.loop_start()
        self.answered.wait(10)

    @property
    def accepted(self) -> bool:
        return bool(self.outcome) and self.outcome[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _accepted(settings: Settings, device_id: str, password: str) -> bool:
    session = Session(settings, device_id, password)
    session.close()
    return session.accepted


def test_a_mosquitto_site_rotates_and_revokes_in_dynamic_security(settings, api, admin):
    tag = fresh_id("dynsec-api")
    created = api.post(f"{V1}/devices", json={"id": tag}, headers=admin)
    assert created.status_code == 201, created.text
    first = created.json()["mqtt_password"]
    held = Session(settings, tag, first)
    assert held.accepted
    try:
        rotated = api.post(f"{V1}/devices/{tag}/secret", headers=admin)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["mqtt_password"]
        assert wait_for(held.ended.is_set, 5), "the old password's session was not ended"
    finally:
        held.close()
    assert not _accepted(settings, tag, first)
    assert _accepted(settings, tag, second)

    assert api.delete(f"{V1}/devices/{tag}/secret", headers=admin).status_code == 204
    assert not _accepted(settings, tag, second)
    assert api.delete(f"{V1}/devices/{tag}/secret", headers=admin).status_code == 204  # again

    third = api.post(f"{V1}/devices/{tag}/secret", headers=admin).json()["mqtt_password"]
    assert _accepted(settings, tag, third)


def test_the_cli_rotates_on_an_emqx_site_without_a_broker(
    settings, service_env, emqx_settings, emqx_db
):
    from tagwatch.ingest.device_accounts import EmqxDatabase
    from tagwatch.ingest.provisioning import provision_device

    tag = fresh_id("emqx-cli")
    with psycopg.connect(settings.database_url) as conn:
        first = provision_device(conn, EmqxDatabase(), tag)
    env = {
        **os.environ,
        **service_env,
        "TAGWATCH_ENVIRONMENT": "test",
        "TAGWATCH_BROKER_KIND": "emqx",
        "TAGWATCH_MQTT_ADMIN_URL": emqx_settings.mqtt_admin_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tagwatch", "device", "rotate", tag],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)["password"]
    assert not emqx_accepts(emqx_db, tag, first)
    assert emqx_accepts(emqx_db, tag, second)


def test_check_config_judges_the_admin_url_only_for_mosquitto():
    base = {"environment": "production", "mqtt_admin_url": "mqtts://tagwatch-admin@h:8884"}
    mosquitto = Settings(**base)  # type: ignore[arg-type]
    emqx = Settings(**base, broker_kind="emqx")  # type: ignore[arg-type]
    assert any("TAGWATCH_MQTT_ADMIN_URL" in p for p in mosquitto.problems())
    assert not any("TAGWATCH_MQTT_ADMIN_URL" in p for p in emqx.problems())
    assert any("TAGWATCH_MQTT_URL" in p for p in emqx.problems())  # the rest is still judged
    with pytest.raises(ValueError, match="broker_kind"):
        Settings(broker_kind="vernemq")  # type: ignore[arg-type]
