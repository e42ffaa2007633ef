"""Register a device outside the API (CLI, simulators, tests): its row and its broker account
together. The row is written by ``store.devices.register_device``, the statement the API's
``create_device`` runs, so a device means the same whoever registered it."""

from __future__ import annotations

import psycopg

from tagwatch.ingest.broker_accounts import BrokerAdmin, new_device_password
from tagwatch.store.devices import register_device


def provision_device(
    conn: psycopg.Connection,
    admin: BrokerAdmin,
    device_id: str,
    kind: str = "tag",
    owntracks_topic: str | None = None,
    expected_interval_s: int = 60,
    payload_key_sealed: str | None = None,
) -> str:
    """Return the new device's MQTT password; nothing is created if either side refuses.
    ``payload_key_sealed``: a phone's sealed OwnTracks encryption key (ingest/payload_keys.py)."""
    password = new_device_password()
    with conn.transaction():
        register_device(
            conn, device_id, kind, owntracks_topic, expected_interval_s, payload_key_sealed
        )
        admin.create_device(device_id, password, owntracks_topic)
    return password
