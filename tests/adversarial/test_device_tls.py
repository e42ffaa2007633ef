"""Attacks from the network between devices and the platform: reading or faking the broker.

Devices speak MQTT over TLS and pin the platform's private CA; the plain listener exists only on
a development machine that asked for it; the shipped broker configuration has TLS on and
plaintext off.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tagwatch.mqtt_client import new_client
from tagwatch.pki import Pki
from tagwatch.settings import MqttEndpoint
from tests.support import fresh_id, stored_fixes, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _plain_connack(host: str, port: int, device_id: str, password: str) -> bytes:
    """A hand-made MQTT 3.1.1 CONNECT in the clear, as a device without TLS would send it."""

    def field(value: str) -> bytes:
        raw = value.encode()
        return len(raw).to_bytes(2, "big") + raw

    variable = field("MQTT") + bytes([4, 0b11000010]) + (30).to_bytes(2, "big")
    body = variable + field(device_id) + field(device_id) + field(password)
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(packet)
        try:
            return sock.recv(16)
        except (TimeoutError, ConnectionResetError):
            return b""


def test_plaintext_to_the_devices_listener_gets_no_session(settings, provision):
    device_id = fresh_id("tag")
    password = provision(device_id)
    devices = MqttEndpoint.parse(settings.mqtt_device_url)
    answer = _plain_connack(devices.host, devices.port, device_id, password)
    print(f"\nplaintext CONNECT on the TLS listener answered {answer!r}")
    assert not answer.startswith(b"\x20\x02")  # no CONNACK: the listener only speaks TLS


def test_no_plain_device_listener_unless_asked(services_dir):
    conf = (services_dir / "mosquitto" / "mosquitto.conf").read_text()
    listeners = re.findall(r"^listener (\d+) (\S+)$", conf, flags=re.MULTILINE)
    assert len(listeners) == 2, listeners  # devices (TLS) and services (client certificates)
    blocks = re.split(r"^listener ", conf, flags=re.MULTILINE)[1:]
    for block in blocks:
        assert "certfile" in block and "keyfile" in block
    assert "use_identity_as_username true" in blocks[1]
    assert "require_certificate true" in blocks[1]


def test_a_device_refuses_a_broker_it_does_not_trust(settings, tmp_path):
    """A man in the middle with a certificate of another CA: the device does not connect, so
    its password is never sent."""
    rogue = Pki(tmp_path / "rogue")
    rogue.ensure(["127.0.0.1", "localhost"], [])
    server = rogue.identity("server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            return
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(3)
                seen.append(tls.recv(1024))
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    devices = MqttEndpoint.parse(settings.mqtt_device_url)
    endpoint = MqttEndpoint(
        "127.0.0.1", port, "tag-x", "secret-password", tls=True, ca_file=devices.ca_file
    )
    client = new_client(endpoint, "tag-x")
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.connect(endpoint.host, endpoint.port)
    thread.join(15)
    listener.close()
    assert not any(b"secret-password" in chunk for chunk in seen)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_old_tls_versions_are_refused(settings):
    devices = MqttEndpoint.parse(settings.mqtt_device_url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(devices.ca_file)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection((devices.host, devices.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname=devices.host)


def test_device_add_prints_the_ca_and_a_working_tls_line(
    settings, service_env, services_dir, running_ingest, tmp_path
):
    """What an installer gets from `tagwatch device add` works as printed: the CA to pin, the
    client id, and a mosquitto_pub line over TLS whose fix is stored."""
    device_id = fresh_id("tag")
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
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["client_id"] == device_id
    assert printed["broker"].startswith("mqtts://")
    assert "-----BEGIN CERTIFICATE-----" in result.stderr
    line = printed["try"]
    assert "--cafile" in line
    published = subprocess.run(line, shell=True, capture_output=True, text=True, check=False)  # noqa: S602
    assert published.returncode == 0, published.stderr
    assert wait_for(lambda: stored_fixes(settings.database_url, device_id) == 1)


def test_reserved_id_refused_by_device_add(services_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tagwatch",
            "--env-file",
            str(services_dir / "env"),
            "device",
            "add",
            "tagwatch-ingest",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "reserved" in result.stderr


def test_shipped_broker_config_has_tls_on_and_plaintext_off():
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    active = [
        line.split("#", 1)[0].strip() for line in conf.splitlines() if line.split("#", 1)[0].strip()
    ]
    listeners = [line for line in active if line.startswith("listener ")]
    assert len(listeners) == 2, listeners
    blocks = re.split(r"^listener ", "\n".join(active), flags=re.MULTILINE)[1:]
    for block in blocks:
        assert re.search(r"^certfile \S+", block, re.MULTILINE), block
        assert re.search(r"^keyfile \S+", block, re.MULTILINE), block
    service_block = next(b for b in blocks if "use_identity_as_username true" in b)
    assert "require_certificate true" in service_block
    assert service_block.split()[1] != "0.0.0.0"  # noqa: S104 - the services' listener is internal
    assert "allow_anonymous false" in active
    assert any(line == "message_size_limit 262144" for line in active)
    assert any(re.fullmatch(r"max_queued_bytes [1-9]\d*", line) for line in active)


def test_paho_without_tls_cannot_connect(settings, provision):
    device_id = fresh_id("tag")
    password = provision(device_id)
    devices = MqttEndpoint.parse(settings.mqtt_device_url)
    # the one factory, told plainly: no TLS (the endpoint's tls=False), a device's account
    client = new_client(MqttEndpoint(devices.host, devices.port, device_id, password), device_id)
    outcome: list[object] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(reason)
    client.connect(devices.host, devices.port, keepalive=10)
    client.loop_start()
    time.sleep(2)
    client.loop_stop()
    assert not any(not getattr(r, "is_failure", True) for r in outcome)
