"""The broker lets a device publish only as itself; the API answers nothing without a token."""

from __future__ import annotations

import json
import re
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import PUBLIC_ROOT, PUBLIC_V1, create_app
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint
from tests.support import count, fresh_id, wait_for

pytestmark = pytest.mark.integration


def _connect_result(mqtt_url: str, username: str, password: str, client_id: str) -> object:
    endpoint = MqttEndpoint.parse(mqtt_url).with_account(username, password)
    client = new_client(endpoint, client_id, protocol=mqtt.MQTTv5)
    outcome: list[object] = []
    done = threading.Event()

    def on_connect(_c, _u, _f, reason, _p) -> None:
        outcome.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return outcome[0] if outcome else None


def test_wrong_password_is_refused(settings, provision):
    device_id = fresh_id("tag")
    provision(device_id)
    reason = _connect_result(settings.mqtt_device_url, device_id, "not-the-password", device_id)
    assert reason is not None and reason.is_failure


def test_tag_must_use_its_own_client_id(settings, provision):
    device_id = fresh_id("tag")
    password = provision(device_id)
    assert not _connect_result(settings.mqtt_device_url, device_id, password, device_id).is_failure
    assert _connect_result(settings.mqtt_device_url, device_id, password, "someone-else").is_failure


def test_device_cannot_publish_on_another_devices_topic(settings, provision, running_ingest):
    me, victim = fresh_id("tag"), fresh_id("tag")
    password = provision(me)
    provision(victim)
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url).with_account(me, password)
    client = new_client(endpoint, me, protocol=mqtt.MQTTv5)
    acks: dict[int, object] = {}
    client.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    fix = json.dumps({"ts": time.time(), "lat": 1.0, "lon": 2.0, "acc": 5}).encode()
    forged = client.publish(f"em/v1/{victim}/fix", fix, qos=1)
    honest = client.publish(f"em/v1/{me}/fix", fix, qos=1)
    assert wait_for(lambda: forged.mid in acks and honest.mid in acks, timeout=10)
    client.disconnect()
    client.loop_stop()
    assert acks[forged.mid].is_failure  # 135 Not authorized
    assert not acks[honest.mid].is_failure
    assert wait_for(
        lambda: (
            count(settings.database_url, "SELECT count(*) FROM fixes WHERE device_id = %s", (me,))
            == 1
        )
    )
    assert (
        count(settings.database_url, "SELECT count(*) FROM fixes WHERE device_id = %s", (victim,))
        == 0
    )


def test_every_route_without_token_gets_401_unless_public(settings):
    """Walks the whole documented route table, so a new route cannot forget its auth."""
    app = create_app(settings)
    paths = app.openapi()["paths"]
    assert len(paths) >= 10
    checked = 0
    with TestClient(app) as client:
        for template, operations in paths.items():
            path = re.sub(r"\{[^}]+\}", "1", template)
            for method in operations:
                response = client.request(method.upper(), path)
                if template in PUBLIC_V1 or template in PUBLIC_ROOT:
                    assert response.status_code != 401, template
                else:
                    assert response.status_code == 401, (method, template, response.text)
                    checked += 1
    assert checked >= 8


def test_bad_token_gets_401(settings):
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/subjects", headers={"Authorization": "Bearer not.a.token"})
    assert response.status_code == 401
    assert response.json()["detail"]


def test_metrics_can_require_a_token(settings):
    private = settings.model_copy(update={"metrics_public": False})
    with TestClient(create_app(private)) as client:
        assert client.get("/metrics").status_code == 401
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 200
