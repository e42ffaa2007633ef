"""SIGKILL ingest at random moments while 20,000 fixes are published: every fix ends up stored
exactly once, because a message is acknowledged only after its batch committed."""

from __future__ import annotations

import json
import random
import threading
import time

import psycopg
import pytest

from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = 20
FIXES_PER_DEVICE = 1_000


def test_sigkill_during_ingest_loses_and_duplicates_nothing(
    settings, service_env, provision, ingest_factory
):
    rng = random.Random(20261122)
    prefix = fresh_id("crash")
    device_ids = [f"{prefix}-{i:02d}" for i in range(DEVICES)]
    for device_id in device_ids:
        provision(device_id)
    ingest = ingest_factory()
    ingest.start_and_wait()

    base = time.time() - 3 * 86400
    messages = [
        (
            f"em/v1/{device_id}/fix",
            json.dumps(
                {
                    "ts": base + seq * 60,
                    "lat": -26.2 + seq * 1e-5,
                    "lon": 28.04,
                    "acc": 7,
                    "seq": seq,
                }
            ).encode(),
        )
        for seq in range(FIXES_PER_DEVICE)
        for device_id in device_ids
    ]
    gateway = connect(
        settings.mqtt_gateway_url,
        "tagwatch-gateway",
        service_env["TAGWATCH_MQTT_GATEWAY_URL"].split(":")[2].split("@")[0],
        client_id=fresh_id("gw"),
    )
    published = threading.Event()

    def publish() -> None:
        for start in range(0, len(messages), 500):
            publish_all(gateway, messages[start : start + 500])
            time.sleep(0.05)  # spread publishing over the kills
        published.set()

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    kills = 0
    while not published.is_set() or kills < 4:
        time.sleep(rng.uniform(0.3, 1.5))
        ingest.kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.5))
        ingest.start_and_wait()
    publisher.join()
    gateway.disconnect()

    query = "SELECT count(*) FROM fixes WHERE device_id LIKE %s"
    stored_all = wait_for(
        lambda: count(settings.database_url, query, (f"{prefix}-%",)) >= len(messages),
        timeout=120,
    )
    assert stored_all, (
        f"only {count(settings.database_url, query, (f'{prefix}-%',))} of {len(messages)} "
        f"stored after {kills} kills\n{ingest.log()[-3000:]}"
    )
    time.sleep(1.0)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT device_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM fixes "
            "WHERE device_id LIKE %s GROUP BY device_id",
            (f"{prefix}-%",),
        ).fetchall()
    assert len(rows) == DEVICES
    for device_id, total, distinct, low, high in rows:
        assert (total, distinct, low, high) == (
            FIXES_PER_DEVICE,
            FIXES_PER_DEVICE,
            0,
            FIXES_PER_DEVICE - 1,
        ), device_id
    assert kills >= 4
