"""The API's road into ingest: what a phone posts over HTTP is published, unchanged, QoS 1, on
the topic the phone would use over MQTT, and the API answers only once the broker has it.

Ingest then decodes, validates, stores exactly once, dead-letters and rate-limits it like any
MQTT message: there is one intake path, not two that could disagree. The broker acknowledges a
QoS 1 publish once the message is queued for ingest's persistent session (and persisted), so a
200 to the phone means the fix cannot be lost any more; without the PUBACK in time the API
answers 503 and the phone keeps the fix and retries (both apps queue what was not accepted).

The relay logs in on the services' listener with its own service account (``tagwatch-api``,
ingest/broker_accounts.py), which may publish only on phones' OwnTracks topics and the internal
``osmand/...`` family, nowhere else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint

log = logging.getLogger(__name__)
CONNECT_WAIT_S = 2.0


class RelayUnavailable(RuntimeError):
    """The broker did not take the message in time (or cannot be reached)."""


class IntakeRelay:
    """One broker connection per API process, reconnecting by itself."""

    def __init__(self, url: str, timeout_s: float, client_id: str | None = None) -> None:
        endpoint = MqttEndpoint.parse(url)
        self.timeout_s = timeout_s
        self.connected = threading.Event()
        self.client = new_client(
            endpoint,
            client_id or f"tagwatch-api-{os.uname().nodename[:20]}-{os.getpid()}",
            clean_session=True,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            log.error("broker refused the API's intake account: %s", rc)
            return
        log.info("HTTP intake connected to the broker")
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        self.connected.clear()
        log.warning("HTTP intake lost the broker: %s", rc)

    def publish(self, topic: str, payload: bytes) -> None:
        """Block until the broker's PUBACK; RelayUnavailable when it does not come in time."""
        deadline = time.monotonic() + self.timeout_s
        if not self.connected.wait(min(self.timeout_s, CONNECT_WAIT_S)):
            msg = "the broker is not reachable"
            raise RelayUnavailable(msg)
        try:
            info = self.client.publish(topic, payload, qos=1)
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as exc:
            raise RelayUnavailable(f"publish failed: {exc}") from exc
        if not info.is_published():
            msg = "the broker did not acknowledge in time"
            raise RelayUnavailable(msg)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
