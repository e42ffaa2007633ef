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
import time

from tagwatch.mqtt_client import BackgroundConnection
from tagwatch.settings import MqttEndpoint

log = logging.getLogger(__name__)
CONNECT_WAIT_S = 2.0


class RelayUnavailable(RuntimeError):
    """The broker did not take the message in time (or cannot be reached)."""


class IntakeRelay:
    """One broker connection per API process, reconnecting by itself."""

    def __init__(self, url: str, timeout_s: float, client_id: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.connection = BackgroundConnection(
            MqttEndpoint.parse(url),
            client_id or f"tagwatch-api-{os.uname().nodename[:20]}-{os.getpid()}",
            "the API's intake account",
        )
        self.client = self.connection.client
        self.connected = self.connection.connected

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
        self.connection.close()
