"""Private PostgreSQL and Mosquitto, started once per test session with the same code as
`tagwatch services up`, and torn down at the end. Tests isolate themselves with fresh ids."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import create_app
from tagwatch.api.security import hash_password
from tests.support import fresh_id, wait_for


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    from tagwatch import services
    from tagwatch.store.migrate import migrate

    base = Path(tempfile.mkdtemp(prefix="tagwatch-test-"))
    try:
        state = services.up(base)
        migrate(state.env()["TAGWATCH_DATABASE_URL"])
        yield base
    finally:
        services.down(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def service_env(services_dir: Path) -> dict[str, str]:
    env = {}
    for line in (services_dir / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]):
    from tagwatch.settings import Settings

    return Settings.for_services(service_env, environment="test")


class IngestProcess:
    """`tagwatch ingest` as a real subprocess, so tests can SIGKILL it like an operator's OOM."""

    def __init__(self, service_env: dict[str, str], client_id: str, log_dir: Path) -> None:
        # Service client ids start with "tagwatch": no device may use such an id.
        if not client_id.startswith("tagwatch"):
            client_id = f"tagwatch-{client_id}"
        self.env = {
            **os.environ,
            **service_env,
            "TAGWATCH_INGEST_CLIENT_ID": client_id,
            "TAGWATCH_ENVIRONMENT": "test",
        }
        self.client_id = client_id
        self.log_path = log_dir / f"{client_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tagwatch", "ingest"], env=self.env, stdout=log, stderr=log
        )

    def start_and_wait(self, timeout: float = 20.0) -> None:
        """Start and wait until the broker confirmed the subscriptions (from the log)."""
        before = self.log().count("subscribed to")
        self.start()
        ok = wait_for(lambda: self.log().count("subscribed to") > before, timeout)
        assert ok, f"ingest did not subscribe in time:\n{self.log()}"

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def end(self) -> None:
        """Stop for good: also end the broker's persistent session of this client id. Left
        behind, every later test's messages would be queued for it (millions over a run, and
        Mosquitto's autosave of them stalled the broker for seconds at a time)."""
        self.stop()
        forget_session(self.env["TAGWATCH_MQTT_URL"], self.client_id)


def forget_session(mqtt_url: str, client_id: str) -> None:
    """Connect as `client_id` with a clean session, which discards the stored one."""
    from tagwatch.mqtt_client import new_client
    from tagwatch.settings import MqttEndpoint

    endpoint = MqttEndpoint.parse(mqtt_url)
    client = new_client(endpoint, client_id, clean_session=True)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(30), f"could not end the broker session of {client_id}"
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def ingest_factory(service_env: dict[str, str], tmp_path: Path) -> Iterator:
    started: list[IngestProcess] = []

    def make(client_id: str | None = None) -> IngestProcess:
        process = IngestProcess(service_env, client_id or fresh_id("ingest"), tmp_path)
        started.append(process)
        return process

    yield make
    for process in started:
        process.end()


@pytest.fixture
def provision(settings):
    """Register a device (row + broker account) and return its password."""
    import psycopg

    from tagwatch.ingest.broker_accounts import BrokerAdmin
    from tagwatch.ingest.provisioning import provision_device

    def make(device_id: str, kind: str = "tag", owntracks_topic: str | None = None) -> str:
        with psycopg.connect(settings.database_url) as conn:
            return provision_device(
                conn,
                BrokerAdmin.from_url(settings.mqtt_admin_url),
                device_id,
                kind,
                owntracks_topic,
            )

    return make


@pytest.fixture(scope="module")
def running_ingest(service_env: dict[str, str], tmp_path_factory) -> Iterator[IngestProcess]:
    """One ingest per module for tests that only need fixes to flow; stopped at the module's end
    so that it never stores what another module's (killed) ingest must store itself."""
    process = IngestProcess(service_env, fresh_id("ingest-shared"), tmp_path_factory.mktemp("log"))
    process.start_and_wait()
    yield process
    process.end()


@pytest.fixture(scope="module")
def api(settings):
    """The real API app, with its own pool, once per module."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def login(settings, api):
    """Create a user with a role and regions; return its Authorization header."""

    def make(role: str, regions: list[str]) -> dict[str, str]:
        username = fresh_id(role)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "INSERT INTO users (username, password_hash, role, regions) "
                "VALUES (%s, %s, %s, %s)",
                (username, hash_password("pass-word-1"), role, regions),
            )
        token = api.post(
            "/api/v1/auth/token", data={"username": username, "password": "pass-word-1"}
        ).json()
        return {"Authorization": f"Bearer {token['access_token']}"}

    return make
