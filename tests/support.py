"""Helpers the integration tests share: fresh ids, an offender holding a tag, waiting for rows, a
device that publishes, the real API in its own process."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg

from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def offender_subject(conn: psycopg.Connection, device: str, since: float) -> int:
    """A tag ``device`` and a subject of the same name in region za-wc, holding it as offender
    from ``since`` on (committed); the subject's id."""
    conn.execute(
        "INSERT INTO regions (id, name) VALUES ('za-wc', 'Western Cape') ON CONFLICT DO NOTHING"
    )
    conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
    row = conn.execute(
        "INSERT INTO subjects (name, region_id) VALUES (%s, 'za-wc') RETURNING id", (device,)
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO device_assignments (device_id, subject_id, role, during)"
        " VALUES (%s, %s, 'offender', tstzrange(to_timestamp(%s), NULL))",
        (device, row[0], since),
    )
    conn.commit()
    return int(row[0])


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


@dataclass
class ApiServer:
    """The real API (`tagwatch api`) in its own process, on a free loopback port."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.contextmanager
def api_server(
    service_env: dict[str, str], log_dir: Path, **overrides: str | None
) -> Iterator[ApiServer]:
    """Start `tagwatch api` with the test services' environment (`TAGWATCH_ENVIRONMENT=test`
    and ``overrides``; None removes a variable), wait for /healthz, stop it afterwards.

    `tagwatch api` never trusts proxy headers by itself: the socket peer is the client, which
    the login-throttling tests rely on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, **service_env, "TAGWATCH_ENVIRONMENT": "test"}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    log_path = log_dir / "api.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tagwatch", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", log_path, process)

    def up() -> bool:
        try:
            return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    try:
        assert wait_for(up, 30), f"the API did not start:\n{server.log()}"
        assert process.poll() is None, f"the API exited:\n{server.log()}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def stored_fixes(database_url: str, device_id: str) -> int:
    """How many fixes of the device are stored."""
    return count(database_url, "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,))
