"""Attacks on identity at the broker, made with what a wearer holds: a tag's or a phone's own MQTT
credentials, the CA they were given, and a raw MQTT client.

The attack that worked before: connect with the phone's account and ingest's client id (clean
session off) and keep reconnecting. Each connection kicked ingest off the broker and handed its
persistent session, with every fix queued for it, to the attacker.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from tagwatch.ingest.broker_accounts import BrokerAdmin, BrokerAdminError, reserved_device_id
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = pytest.mark.integration

SERVICE_IDS = ("tagwatch-ingest", "tagwatch-dispatcher", "tagwatch-admin", "tagwatch-gateway")


class Attempt:
    """One raw MQTT connection attempt; records the CONNACK and anything delivered."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, *, clean: bool = False) -> None:
        self.reason: object | None = None
        self.received: list[str] = []
        self.done = threading.Event()
        self.client = new_client(endpoint, client_id, clean_session=clean)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.received.append(msg.topic)
        self.client.on_disconnect = lambda *_: self.done.set()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason, _p) -> None:
        self.reason = reason
        if not reason.is_failure:
            client.subscribe("em/v1/#", qos=1)  # and try to read everyone's fixes
        self.done.set()

    def run(self, endpoint: MqttEndpoint, hold: float = 0.3) -> Attempt:
        try:
            self.client.connect(endpoint.host, endpoint.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            self.reason = exc
            return self
        self.client.loop_start()
        self.done.wait(5)
        time.sleep(hold)
        self.client.disconnect()
        self.client.loop_stop()
        return self

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not getattr(self.reason, "is_failure", True)


def attempt(endpoint: MqttEndpoint, client_id: str, clean: bool = False) -> Attempt:
    return Attempt(endpoint, client_id, clean=clean).run(endpoint)


@pytest.fixture
def phone(settings, provision) -> tuple[str, str]:
    device_id = fresh_id("phone")
    topic = f"owntracks/{device_id}/{fresh_id('p')}"
    return device_id, provision(device_id, "phone", topic)


def test_phone_cannot_take_over_ingest_session(settings, provision, phone, ingest_factory):
    """The issue's attack: the phone's account reconnects for 20 s with ingest's client id and clean
    session off while an honest tag publishes 40 fixes. Before: 20 of 40 fixes lost and 20 of
    other devices' messages delivered to the attacker."""
    ingest_id = f"tagwatch-ingest-{secrets.token_hex(3)}"
    ingest = ingest_factory(ingest_id)
    ingest.start_and_wait()
    honest = fresh_id("tag")
    tag = connect(settings.mqtt_device_url, honest, provision(honest))
    phone_id, phone_password = phone
    attacker = MqttEndpoint.parse(settings.mqtt_device_url).with_account(phone_id, phone_password)

    attempts: list[Attempt] = []
    stop = threading.Event()

    def keep_attacking() -> None:
        for target in [ingest_id, *SERVICE_IDS]:
            attempts.append(attempt(attacker, target))
        while not stop.is_set():
            attempts.append(attempt(attacker, ingest_id))

    thread = threading.Thread(target=keep_attacking)
    thread.start()
    now = time.time()
    for i in range(40):
        fix = {"ts": now - 40 + i, "lat": -33.9, "lon": 18.4, "acc": 8, "seq": i}
        publish_all(tag, [(f"em/v1/{honest}/fix", json.dumps(fix).encode())])
        time.sleep(0.5)
    stop.set()
    thread.join(30)
    tag.disconnect()

    stored = 0

    def all_stored() -> bool:
        nonlocal stored
        sql = "SELECT count(*) FROM fixes WHERE device_id = %s"
        stored = count(settings.database_url, sql, (honest,))
        return stored == 40

    wait_for(all_stored, timeout=30)
    received = sum(len(a.received) for a in attempts)
    accepted = sum(a.accepted for a in attempts)
    print(
        f"\nsession takeover: {len(attempts)} connections as ingest's client id, {accepted}"
        f" accepted, {received} messages received by the attacker, fixes lost {40 - stored}/40"
    )
    assert len(attempts) >= 10
    assert accepted == 0
    assert received == 0
    assert stored == 40
    assert ingest.process is not None and ingest.process.poll() is None
    assert "refused" not in ingest.log()


def test_tag_cannot_use_a_service_or_another_devices_client_id(settings, provision):
    me, other = fresh_id("tag"), fresh_id("tag")
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url).with_account(me, provision(me))
    provision(other)
    for client_id in [*SERVICE_IDS, f"tagwatch-dispatch-{secrets.token_hex(2)}", other, ""]:
        result = attempt(endpoint, client_id or f"random-{secrets.token_hex(3)}", clean=True)
        assert not result.accepted, client_id
    assert attempt(endpoint, me, clean=True).accepted


def test_phone_is_pinned_to_its_device_id(settings, phone):
    phone_id, password = phone
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url).with_account(phone_id, password)
    assert not attempt(endpoint, f"owntracks-{secrets.token_hex(3)}", clean=True).accepted
    assert attempt(endpoint, phone_id, clean=True).accepted


def test_service_identities_do_not_work_on_the_devices_listener(settings):
    """The services log in with client certificates on their own listener; on the devices'
    listener a certificate is no login, and their broker passwords are known to nobody."""
    devices = MqttEndpoint.parse(settings.mqtt_device_url)
    for url in (settings.mqtt_url, settings.mqtt_admin_url, settings.mqtt_dispatcher_url):
        service = MqttEndpoint.parse(url)
        with_cert = MqttEndpoint(
            devices.host,
            devices.port,
            None,
            None,
            tls=True,
            ca_file=devices.ca_file,
            cert_file=service.cert_file,
            key_file=service.key_file,
        )
        assert not attempt(with_cert, f"tagwatch-probe-{secrets.token_hex(2)}").accepted
        for guess in ("", "tagwatch", service.username, "password"):
            guessed = devices.with_account(service.username, guess)
            assert not attempt(guessed, service.username or "x", clean=True).accepted


def test_device_password_does_not_open_the_service_listener(settings, provision):
    device_id = fresh_id("tag")
    password = provision(device_id)
    service = MqttEndpoint.parse(settings.mqtt_url)
    as_device = MqttEndpoint(
        service.host, service.port, device_id, password, tls=True, ca_file=service.ca_file
    )
    result = attempt(as_device, device_id, clean=True)
    assert not result.accepted
    print(f"\ndevice credentials on the service listener: {result.reason!r}")


def test_device_cannot_administer_the_broker(settings, provision):
    """A device account publishing dynamic-security commands is refused: nothing changes."""
    device_id = fresh_id("tag")
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url).with_account(
        device_id, provision(device_id)
    )
    forged = BrokerAdmin(endpoint, timeout=3)
    with pytest.raises(BrokerAdminError):
        forged.run([{"command": "createClient", "username": "x-evil", "password": "p"}])


@pytest.mark.parametrize("device_id", ["alerts", "tagwatch-ingest", "TagWatch-x", "tagwatch"])
def test_reserved_device_ids_are_refused(settings, api, login, device_id):
    assert reserved_device_id(device_id)
    admin = login("admin", ["*"])
    response = api.post("/api/v1/devices", json={"id": device_id}, headers=admin)
    assert response.status_code == 422, response.text
    assert "reserved" in response.text
    with pytest.raises(BrokerAdminError, match="reserved"):
        BrokerAdmin.from_url(settings.mqtt_admin_url).create_device(device_id, "pw", None)
    assert not count(
        settings.database_url, "SELECT count(*) FROM devices WHERE id = %s", (device_id,)
    )


def test_dollar_ids_never_reach_the_broker(api, login):
    admin = login("admin", ["*"])
    response = api.post("/api/v1/devices", json={"id": "$SYS"}, headers=admin)
    assert response.status_code == 422


def test_gateway_is_development_only(settings):
    production = settings.model_copy(update={"environment": "production"})
    assert any("GATEWAY" in p for p in production.problems())
    without = settings.model_copy(update={"environment": "production", "mqtt_gateway_url": None})
    assert not any("GATEWAY" in p for p in without.problems())
