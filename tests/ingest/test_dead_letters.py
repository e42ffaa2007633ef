"""Every kind of bad input becomes a dead letter with its raw bytes and reason, is counted, and
never stops ingest: the good fixes around it are stored."""

from __future__ import annotations

import hashlib
import json
import time

import psycopg
import pytest

from tests.support import connect, count, fresh_id, publish_all, stored_fixes, wait_for

pytestmark = pytest.mark.integration


def _fix(ts: float, seq: int, **over: object) -> dict[str, object]:
    return {"ts": ts, "lat": 40.7, "lon": -74.0, "acc": 9, "seq": seq, **over}


def _cases(now: float) -> dict[str, bytes]:
    return {
        "malformed_json": b'{"ts": 1, "lat": ',
        "schema_violation": json.dumps(_fix(now, 1, lat="north")).encode(),
        "non_finite_number": b'{"ts": %d, "lat": 1e999, "lon": 2, "acc": 3}' % int(now),
        "coordinates_out_of_range": json.dumps(_fix(now, 1, lat=91.0)).encode(),
        "timestamp_in_future": json.dumps(_fix(now + 86400, 1)).encode(),
        "timestamp_invalid": json.dumps(_fix("2026-11-22T10:00:00", 1)).encode(),
        "too_late": json.dumps(_fix(now - 8 * 86400, 1)).encode(),
        "too_many_fixes": json.dumps({"fixes": [_fix(now - i, i) for i in range(501)]}).encode(),
        "value_out_of_range": json.dumps(_fix(now, 1, acc=-5)).encode(),
    }


@pytest.fixture(scope="module")
def gateway(settings, service_env):
    password = service_env["TAGWATCH_MQTT_GATEWAY_URL"].split(":")[2].split("@")[0]
    client = connect(settings.mqtt_gateway_url, "tagwatch-gateway", password, fresh_id("gw"))
    yield client
    client.disconnect()


@pytest.mark.parametrize(
    "reason",
    [
        "malformed_json",
        "schema_violation",
        "non_finite_number",
        "coordinates_out_of_range",
        "timestamp_in_future",
        "timestamp_invalid",
        "too_late",
        "too_many_fixes",
        "value_out_of_range",
    ],
)
def test_bad_payload_is_dead_lettered_between_good_fixes(
    settings, provision, running_ingest, reason
):
    device_id = fresh_id("tag")
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
    now = time.time()
    bad = _cases(now)[reason]
    topic = f"em/v1/{device_id}/fix"
    publish_all(
        device,
        [
            (topic, json.dumps(_fix(now - 10, 100)).encode()),
            (topic, bad),
            (topic, json.dumps(_fix(now - 5, 101)).encode()),
        ],
    )
    device.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM dead_letters WHERE topic = %s",
                (topic,),
            )
            >= 1
        )
    )
    assert wait_for(lambda: stored_fixes(settings.database_url, device_id) == 2)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT reason, payload, detail, sender, payload_length, payload_sha256, repeats"
            " FROM dead_letters WHERE topic = %s",
            (topic,),
        ).fetchall()
    assert [r[0] for r in rows] == [reason]
    assert bytes(rows[0][1]) == bad[:4096]  # a prefix, with the length and digest of the whole
    assert rows[0][2]
    assert rows[0][3:] == (device_id, len(bad), hashlib.sha256(bad).digest(), 1)


def test_one_bad_fix_in_a_batch_keeps_the_good_ones(settings, provision, running_ingest):
    device_id = fresh_id("tag")
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
    now = time.time()
    batch = {"fixes": [_fix(now - 3, 1), _fix(now - 2, 2, lon=200), _fix(now - 1, 3)]}
    publish_all(device, [(f"em/v1/{device_id}/fix", json.dumps(batch).encode())])
    device.disconnect()
    assert wait_for(lambda: stored_fixes(settings.database_url, device_id) == 2)
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM dead_letters WHERE topic = %s "
                "AND reason = 'coordinates_out_of_range' AND detail LIKE 'fixes[1]%%'",
                (f"em/v1/{device_id}/fix",),
            )
            == 1
        )
    )


def test_unknown_device_and_topic_mismatch(settings, provision, running_ingest, gateway):
    unknown = fresh_id("ghost")
    phone = fresh_id("phone")
    provision(phone, "phone", f"owntracks/{fresh_id('u')}/{phone}")
    now = time.time()
    publish_all(
        gateway,
        [
            (f"em/v1/{unknown}/fix", json.dumps(_fix(now, 1)).encode()),
            (f"em/v1/{phone}/fix", json.dumps(_fix(now, 1)).encode()),
            (
                f"owntracks/{fresh_id('u')}/{fresh_id('d')}",
                json.dumps({"_type": "location", "lat": 1, "lon": 2, "tst": int(now)}).encode(),
            ),
        ],
    )
    for topic, reason in (
        (f"em/v1/{unknown}/fix", "unknown_device"),
        (f"em/v1/{phone}/fix", "topic_mismatch"),
    ):
        assert wait_for(
            lambda t=topic, r=reason: (
                count(
                    settings.database_url,
                    "SELECT count(*) FROM dead_letters WHERE topic = %s AND reason = %s",
                    (t, r),
                )
                == 1
            )
        )


def test_dead_letters_are_counted_in_metrics(settings, running_ingest):
    from fastapi.testclient import TestClient

    from tagwatch.api.app import create_app

    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    assert 'tagwatch_ingest_dead_letters_total{reason="malformed_json"}' in text
    assert "tagwatch_ingest_fixes_stored_total" in text
