"""After a restart ingest judges silence only once the broker's backlog is written.

The broker keeps what arrived while ingest was away and sends it first; ingest's drain marker,
published after it subscribes, comes back behind that backlog. So at the moment the log says the
backlog is written every fix published during the outage is in the database, however long
decoding and writing it took; and a marker forged by a device (whose account is in the wearer's
hands) is refused by the broker and changes nothing."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from tests.support import connect, count, fresh_id, publish_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = 10
FIXES_PER_DEVICE = 400
MARKER = "backlog written (drain marker back"


def test_silence_is_judged_only_after_the_backlog_is_written(
    settings, service_env, provision, ingest_factory
):
    prefix = fresh_id("drain")
    device_ids = [f"{prefix}-{i:02d}" for i in range(DEVICES)]
    passwords = {d: provision(d) for d in device_ids}
    ingest = ingest_factory()
    ingest.start_and_wait()
    assert wait_for(lambda: MARKER in ingest.log(), 20), ingest.log()
    ingest.kill()

    base = time.time() - 3600
    messages = [
        (
            f"em/v1/{device_id}/fix",
            json.dumps(
                {"ts": base + seq * 5, "lat": -26.2 + seq * 1e-5, "lon": 28.04, "acc": 7}
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
    try:
        publish_all(gateway, messages)  # held by the broker: ingest is down
    finally:
        gateway.disconnect()
    query = "SELECT count(*) FROM fixes WHERE device_id LIKE %s"
    assert count(settings.database_url, query, (f"{prefix}-%",)) == 0

    ingest.start_and_wait()
    assert wait_for(lambda: ingest.log().count(MARKER) >= 2, 60), ingest.log()
    stored = count(settings.database_url, query, (f"{prefix}-%",))
    assert stored == len(messages), f"{stored} of {len(messages)} written when silence was judged"

    # A device forges the marker (guessing the topic is easy; the nonce is not): the broker
    # refuses the publication outright.
    device = connect(
        settings.mqtt_device_url,
        device_ids[0],
        passwords[device_ids[0]],
        protocol=mqtt.MQTTv5,
    )
    answers: list[mqtt.ReasonCode] = []
    device.on_publish = lambda _c, _u, _mid, reason, _p: answers.append(reason)
    try:
        info = device.publish(f"tagwatch/barrier/{ingest.client_id}", b"1:0", qos=1)
        info.wait_for_publish(10)
        time.sleep(1.0)
    finally:
        device.disconnect()
    assert answers and answers[0].is_failure, answers  # 135: not authorized
    assert ingest.log().count(MARKER) == 2, ingest.log()
