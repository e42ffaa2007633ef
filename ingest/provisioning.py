"""Register, rotate and revoke a device outside the API (CLI, simulators, tests): its row and its
broker account (ingest/device_accounts.py: Mosquitto's dynamic security, or nothing more on EMQX)
together. The row is written by ``store.devices.register_device``, the statement the API's
``create_device`` runs, so a device means the same whoever registered it."""

from __future__ import annotations

import psycopg

from tagwatch.ingest.broker_accounts import new_device_password
from tagwatch.ingest.device_accounts import DeviceAccounts
from tagwatch.ingest.device_secrets import new_osmand_token, secret_digest
from tagwatch.store.audit import append_sync
from tagwatch.store.devices import (
    Device,
    device_sync,
    register_device,
    set_device_secret_sync,
)


def provision_device(
    conn: psycopg.Connection,
    admin: DeviceAccounts,
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


def rotate_device(
    conn: psycopg.Connection, accounts: DeviceAccounts, device_id: str, actor: str
) -> tuple[Device, str] | None:
    """A new secret for the device (row and broker together, audited as the API audits it),
    returned with the row; None when there is no such device. The broker refusing leaves the
    old secret in place (BrokerAdminError)."""
    with conn.transaction():
        found = device_sync(conn, device_id)
        if found is None:
            return None
        secret = new_osmand_token() if found.osmand else new_device_password()
        row = set_device_secret_sync(conn, device_id, secret_digest(secret))
        assert row is not None
        if not row.osmand:
            accounts.rotate_device(device_id, secret, row.owntracks_topic)
        append_sync(conn, actor, "admin", "device_secret_rotate", None, {"device_id": device_id})
    return row, secret


def revoke_device(
    conn: psycopg.Connection, accounts: DeviceAccounts, device_id: str, actor: str
) -> Device | None:
    """Withdraw the device's secret (row and broker together, audited); None when there is no
    such device."""
    with conn.transaction():
        row = set_device_secret_sync(conn, device_id, None)
        if row is None:
            return None
        if not row.osmand:
            accounts.revoke_device(device_id)
        append_sync(conn, actor, "admin", "device_secret_revoke", None, {"device_id": device_id})
    return row
