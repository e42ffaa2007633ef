"""One way to build a paho MQTT client for a broker endpoint: TLS, client certificate and account.

Every process that talks to the broker (ingest, the dispatcher, provisioning, simulators, load,
benchmarks, tests) builds its client here, so a TLS or identity rule is made once: certificates
are verified against the private CA (never `tls_insecure`), the host name is checked against the
server certificate, and TLS 1.2 is the floor.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tagwatch.settings import MqttEndpoint

log = logging.getLogger("tagwatch.mqtt")


def tls_context(endpoint: MqttEndpoint) -> ssl.SSLContext:
    """A client context that trusts only the endpoint's CA file (the system store without one)."""
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.cert_file and endpoint.key_file:
        context.load_cert_chain(endpoint.cert_file, endpoint.key_file)
    return context


def new_client(
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    protocol: MQTTProtocolVersion = mqtt.MQTTv311,
    clean_session: bool | None = None,
) -> mqtt.Client:
    """A client ready to `connect(endpoint.host, endpoint.port)`; callbacks are the caller's."""
    kwargs: dict[str, object] = {}
    if protocol != mqtt.MQTTv5 and clean_session is not None:
        kwargs["clean_session"] = clean_session
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        **kwargs,  # type: ignore[arg-type]
    )
    if endpoint.tls:
        client.tls_set_context(tls_context(endpoint))
    if endpoint.username and not endpoint.cert_file:
        client.username_pw_set(endpoint.username, endpoint.password)
    return client


def connect(client: mqtt.Client, endpoint: MqttEndpoint, keepalive: int = 30) -> None:
    client.connect(endpoint.host, endpoint.port, keepalive=keepalive)


class BackgroundConnection:
    """A service's long-lived publishing connection (the dispatcher's, the API's intake relay):
    clean session, up to 1,000 QoS 1 messages in flight (and no limit on those queued
    behind them, paho's default), paho's network thread reconnecting by
    itself every 1-5 s, and ``connected`` set only while the broker has accepted the account, so
    a publisher can wait a bounded time for it instead of queueing into a dead connection.

    ``who`` names the service in the log lines."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, who: str) -> None:
        self.who = who
        self.connected = threading.Event()
        self.client = new_client(endpoint, client_id, clean_session=True)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            log.error("broker refused %s: %s", self.who, rc)
            return
        log.info("%s connected to the broker", self.who)
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        self.connected.clear()
        log.warning("%s lost the broker: %s", self.who, rc)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
