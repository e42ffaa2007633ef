"""The database goes away under a running ingest and comes back: nothing published meanwhile is
lost, because nothing is acknowledged before it is committed."""

from __future__ import annotations

import json
import time

import pytest

from tagwatch import services
from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_database_outage_loses_nothing(settings, services_dir, provision, ingest_factory):
    device_id = fresh_id("tag")
    device = connect(settings.mqtt_url, device_id, provision(device_id))
    ingest = ingest_factory()
    ingest.start_and_wait()
    now = time.time() - 3600

    def fixes(seqs: range) -> list[tuple[str, bytes]]:
        return [
            (
                f"em/v1/{device_id}/fix",
                json.dumps({"ts": now + s, "lat": 10.0, "lon": 10.0, "acc": 5, "seq": s}).encode(),
            )
            for s in seqs
        ]

    query = "SELECT count(*) FROM fixes WHERE device_id = %s"
    publish_all(device, fixes(range(100)))
    assert wait_for(lambda: count(settings.database_url, query, (device_id,)) == 100)

    state = services._read_state(services_dir)
    assert state is not None
    services._pg_stop(state, services.pg_bindir())
    try:
        publish_all(device, fixes(range(100, 400)))  # the broker holds them for ingest
        time.sleep(3)
        assert ingest.process is not None
        assert ingest.process.poll() is None, "ingest must survive a database outage"
    finally:
        services._pg_start(state, services.pg_bindir())
    device.disconnect()
    assert wait_for(lambda: count(settings.database_url, query, (device_id,)) == 400, 60), (
        ingest.log()[-3000:]
    )
    assert "retrying" in ingest.log()
