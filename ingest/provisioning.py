"""Register a device outside the API (CLI, simulators): its row and its broker account together."""

from __future__ import annotations

import psycopg

from tagwatch.ingest.broker_accounts import BrokerAdmin, new_device_password


def provision_device(
    conn: psycopg.Connection,
    admin: BrokerAdmin,
    device_id: str,
    kind: str = "tag",
    owntracks_topic: str | None = None,
    expected_interval_s: int = 60,
) -> str:
    """Return the new device's MQTT password; nothing is created if either side refuses."""
    password = new_device_password()
    with conn.transaction():
        conn.execute(
            "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s) "
            "VALUES (%s, %s, %s, %s)",
            (device_id, kind, owntracks_topic, expected_interval_s),
        )
        admin.create_device(device_id, password, owntracks_topic)
    return password
