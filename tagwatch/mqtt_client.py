"""One way to build a paho MQTT client for a broker endpoint: TLS, client certificate and account.

Every process that talks to the broker (ingest, the dispatcher, provisioning, simulators, load,
benchmarks, tests) builds its client here, so a TLS or identity rule is made once: certificates
are verified against the private CA (never `tls_insecure`), the host name is checked against the
server certificate, and TLS 1.2 is the floor.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tagwatch.settings import MqttEndpoint


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
