"""Helpers the integration tests share: fresh ids, waiting for rows, a device that publishes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import psycopg

from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def count(database_url: str, sql: str, params: tuple = ()) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def connect(
    mqtt_url: str,
    username: str,
    password: str | None,
    client_id: str | None = None,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311,
) -> mqtt.Client:
    """A connected client: a device's own account on the devices' TLS listener
    (`settings.mqtt_device_url`), or a service identity (its client certificate is in the URL;
    user name and password are then ignored by the broker)."""
    endpoint = MqttEndpoint.parse(mqtt_url)
    if not endpoint.cert_file:
        endpoint = endpoint.with_account(username, password)
    client = new_client(endpoint, client_id or username, protocol=protocol)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish and wait until the broker acknowledged every message."""
    infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=60)
        assert info.is_published(), "broker did not acknowledge a publish"
