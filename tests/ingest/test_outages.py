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
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
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


def test_broker_outage_loses_nothing_and_ingest_reconnects(
    settings, services_dir, provision, ingest_factory
):
    """Mosquitto goes down mid-stream (what it held for ingest's session is on disk) and comes
    back: ingest reconnects with backoff to its session and every fix is stored exactly once."""
    device_id = fresh_id("tag")
    password = provision(device_id)
    ingest = ingest_factory()
    ingest.start_and_wait()
    now = time.time() - 3600

    def fixes(seqs: range) -> list[tuple[str, bytes]]:
        return [
            (
                f"em/v1/{device_id}/fix",
                json.dumps({"ts": now + s, "lat": 11.0, "lon": 11.0, "acc": 5, "seq": s}).encode(),
            )
            for s in seqs
        ]

    device = connect(settings.mqtt_device_url, device_id, password)
    publish_all(device, fixes(range(2000)))  # acknowledged by the broker: it owes them to ingest
    device.disconnect()
    device.loop_stop()
    state = services._read_state(services_dir)
    assert state is not None
    services._mqtt_stop(services_dir)  # mid-stream: ingest holds part of the backlog, unacked
    try:
        time.sleep(2)
        assert ingest.process is not None
        assert ingest.process.poll() is None, "ingest must survive a broker outage"
    finally:
        services._mqtt_start(services_dir, state)
    device = None
    deadline = time.monotonic() + 15
    while device is None:  # the broker may take a moment to listen again
        try:
            device = connect(settings.mqtt_device_url, device_id, password)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    publish_all(device, fixes(range(2000, 2500)))
    device.disconnect()
    device.loop_stop()
    query = "SELECT count(*) FROM fixes WHERE device_id = %s"
    assert wait_for(lambda: count(settings.database_url, query, (device_id,)) == 2500, 60), (
        ingest.log()[-3000:]
    )
    time.sleep(1)  # anything redelivered twice would show up now
    assert count(settings.database_url, query, (device_id,)) == 2500
    assert ingest.log().count("connected to broker") >= 2
