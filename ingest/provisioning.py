"""Register a device outside the API (CLI, simulators, tests): its row and its broker account
together. The row is written by ``store.devices.register_device``, the statement the API's
``create_device`` runs, so a device means the same whoever registered it."""

from __future__ import annotations

import psycopg

from tagwatch.ingest.broker_accounts import BrokerAdmin, new_device_password
from tagwatch.ingest.device_secrets import new_osmand_token, secret_digest
from tagwatch.store.devices import register_device


def provision_device(
    conn: psycopg.Connection,
    admin: BrokerAdmin,
    device_id: str,
    kind: str = "tag",
    owntracks_topic: str | None = None,
    expected_interval_s: int = 60,
    payload_key_sealed: str | None = None,
    *,
    osmand: bool = False,
) -> str:
    """Return the new device's secret (shown once); nothing is created if either side refuses.

    The secret is the MQTT password, which also authenticates an OwnTracks phone's HTTP posts;
    an OsmAnd phone (``osmand``) gets no broker account, and its secret is the token of its
    server URL (ingest/device_secrets.py). ``payload_key_sealed``: a phone's sealed OwnTracks
    encryption key (ingest/payload_keys.py)."""
    secret = new_osmand_token() if osmand else new_device_password()
    with conn.transaction():
        register_device(
            conn,
            device_id,
            kind,
            owntracks_topic,
            expected_interval_s,
            osmand=osmand,
            secret_sha256=secret_digest(secret),
            payload_key_sealed=payload_key_sealed,
        )
        if not osmand:
            admin.create_device(device_id, secret, owntracks_topic)
    return secret
