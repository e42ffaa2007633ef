"""Which devices exist, kept in memory by ingest so that a fix costs no registry query.

Devices are created through the API while ingest runs, so a miss is looked up once in the
database; a device that does not exist is remembered as missing for a short while, so a flood
from an unregistered device cannot turn into a flood of queries.
"""

from __future__ import annotations

import time

import psycopg

from tagwatch.ingest.decode import DeviceInfo
from tagwatch.ingest.payload_keys import open_payload_key
from tagwatch.store.devices import DeviceKey, device_key_by_id, device_key_by_topic, device_keys
from tagwatch.store.webhook_secrets import SecretBox

MISSING_TTL_S = 5.0


class DeviceRegistry:
    def __init__(self, database_url: str, secret_key: str | None = None) -> None:
        """``secret_key``: `TAGWATCH_WEBHOOK_SECRET_KEY`, which opens phones' sealed
        OwnTracks encryption keys (ingest/payload_keys.py)."""
        self.database_url = database_url
        self._box = SecretBox.optional(secret_key)
        self._by_id: dict[str, DeviceInfo] = {}
        self._by_topic: dict[str, DeviceInfo] = {}
        self._missing: dict[str, float] = {}
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def _remember(self, key: DeviceKey) -> DeviceInfo:
        device = DeviceInfo(
            key.id,
            key.kind,
            key.owntracks_topic,
            open_payload_key(key.id, key.payload_key_sealed, self._box),
        )
        self._by_id[device.device_id] = device
        if device.owntracks_topic:
            self._by_topic[device.owntracks_topic] = device
        return device

    def load_all(self) -> int:
        keys = device_keys(self._connection())
        for key in keys:
            self._remember(key)
        return len(keys)

    def _fetch(self, key: str, column: str) -> DeviceInfo | None:
        now = time.monotonic()
        if self._missing.get(f"{column}:{key}", 0.0) > now:
            return None
        lookup = device_key_by_id if column == "id" else device_key_by_topic
        try:
            found = lookup(self._connection(), key)
        except psycopg.OperationalError:
            self._conn = None
            raise
        if found is None:
            self._missing[f"{column}:{key}"] = now + MISSING_TTL_S
            if len(self._missing) > 100_000:
                self._missing = {k: v for k, v in self._missing.items() if v > now}
            return None
        return self._remember(found)

    def by_id(self, device_id: str) -> DeviceInfo | None:
        return self._by_id.get(device_id) or self._fetch(device_id, "id")

    def by_owntracks_topic(self, topic: str) -> DeviceInfo | None:
        return self._by_topic.get(topic) or self._fetch(topic, "owntracks_topic")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
