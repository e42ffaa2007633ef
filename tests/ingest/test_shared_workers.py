"""Two ingest workers on one shared subscription split the stream: every fix stored exactly
once, both doing part of the work (the way to use a second core)."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_workers_on_a_shared_subscription_store_every_fix_once(
    settings, service_env, provision, ingest_factory
):
    group = fresh_id("pool")
    workers = [ingest_factory(fresh_id("worker")) for _ in range(2)]
    for worker in workers:
        worker.env["TAGWATCH_INGEST_SHARED_GROUP"] = group
        worker.start_and_wait()
    prefix = fresh_id("shared")
    devices = [f"{prefix}-{i}" for i in range(8)]
    for device_id in devices:
        provision(device_id)
    base = time.time() - 7200
    messages = [
        (
            f"em/v1/{device_id}/fix",
            json.dumps(
                {"ts": base + seq, "lat": -29.0 + seq * 1e-5, "lon": 24.0, "acc": 5, "seq": seq}
            ).encode(),
        )
        for seq in range(500)
        for device_id in devices
    ]
    password = service_env["TAGWATCH_MQTT_GATEWAY_URL"].split(":")[2].split("@")[0]
    gateway = connect(settings.mqtt_gateway_url, "tagwatch-gateway", password, fresh_id("gw"))
    publish_all(gateway, messages)
    gateway.disconnect()
    query = "SELECT count(*) FROM fixes WHERE device_id LIKE %s"
    assert wait_for(lambda: count(settings.database_url, query, (f"{prefix}-%",)) == 4000, 60)
    time.sleep(1)
    assert count(settings.database_url, query, (f"{prefix}-%",)) == 4000
    distinct = "SELECT count(DISTINCT (device_id, seq)) FROM fixes WHERE device_id LIKE %s"
    assert count(settings.database_url, distinct, (f"{prefix}-%",)) == 4000
    for worker in workers:
        stored = count(
            settings.database_url,
            "SELECT coalesce(sum(value), 0)::bigint FROM ingest_counters"
            " WHERE worker = %s AND metric = 'fixes_stored_total'",
            (worker.client_id,),
        )
        assert stored > 0, f"{worker.client_id} stored nothing: the stream was not shared"


def test_two_workers_raise_each_alert_once(settings, service_env, provision, ingest_factory):
    """Fixes of one subject land on both workers at once: the per-subject rule-state lock keeps
    the state whole, so each excursion is one alert, whatever the split."""
    import psycopg

    from tests.alerts.test_engine_end_to_end import fix_msg, gateway, setup_subject

    group = fresh_id("pool")
    workers = [ingest_factory(fresh_id("worker")) for _ in range(2)]
    for worker in workers:
        worker.env["TAGWATCH_INGEST_SHARED_GROUP"] = group
        worker.start_and_wait()
    devices = [fresh_id("split") for _ in range(6)]
    start = time.time() - 900
    subjects = []
    with psycopg.connect(settings.database_url) as conn:
        for device_id in devices:
            provision(device_id)
            subjects.append(setup_subject(conn, device_id, start)[0])
    time.sleep(1.2)  # the engines read the new zones
    path = [2000, 1500, 1000, 600, 300] + [40] * 12 + [600, 1200, 2000, 2500, 3000]
    messages = [
        fix_msg(device_id, start + 10 * i, metres, i)
        for i, metres in enumerate(path)
        for device_id in devices
    ]
    gw = gateway(settings, service_env)
    publish_all(gw, messages)
    gw.disconnect()

    def entries() -> int:
        return count(
            settings.database_url,
            "SELECT count(*) FROM alerts WHERE subject_id = ANY(%s)"
            " AND type = 'exclusion_zone_entry' AND cleared_at IS NOT NULL",
            (subjects,),
        )

    assert wait_for(lambda: entries() == len(subjects), 30), workers[0].log()[-2000:]
    time.sleep(1)
    per_subject = count(
        settings.database_url,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM alerts WHERE subject_id = ANY(%s)"
        " AND type = 'exclusion_zone_entry' GROUP BY subject_id) x",
        (subjects,),
    )
    assert per_subject == 1
