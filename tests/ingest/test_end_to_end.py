"""A device publishes through the real broker with its own credentials; the fix is stored once
and comes back from the API's position and track endpoints."""

from __future__ import annotations

import json
import time

import pytest

from tagwatch.store.fix_columns import value
from tests.support import connect, count, fresh_id, publish_all, stored_fixes, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def admin_headers(login) -> dict[str, str]:
    return login("admin", ["*"])


def test_fix_published_by_device_comes_back_from_api(settings, api, admin_headers, running_ingest):
    region = fresh_id("r")
    assert (
        api.post(
            "/api/v1/regions", json={"id": region, "name": "Test"}, headers=admin_headers
        ).status_code
        == 201
    )
    subject = api.post(
        "/api/v1/subjects",
        json={"name": "A. Person", "region_id": region, "timezone": "Africa/Johannesburg"},
        headers=admin_headers,
    )
    assert subject.status_code == 201, subject.text
    subject_id = subject.json()["id"]
    device_id = fresh_id("tag")
    created = api.post("/api/v1/devices", json={"id": device_id}, headers=admin_headers)
    assert created.status_code == 201, created.text
    password = created.json()["mqtt_password"]
    assigned = api.post(
        f"/api/v1/subjects/{subject_id}/assignments",
        json={"device_id": device_id, "from": "2020-01-01T00:00:00Z"},
        headers=admin_headers,
    )
    assert assigned.status_code == 201, assigned.text

    now = time.time()
    device = connect(settings.mqtt_device_url, device_id, password)
    fixes = [
        {"ts": now - 120 + i * 60, "lat": -33.92 + i * 0.001, "lon": 18.42, "acc": 6.5, "seq": i}
        for i in range(3)
    ]
    publish_all(device, [(f"em/v1/{device_id}/fix", json.dumps(f).encode()) for f in fixes])
    device.disconnect()
    assert wait_for(lambda: stored_fixes(settings.database_url, device_id) == 3), (
        running_ingest.log()
    )

    position = api.get(f"/api/v1/subjects/{subject_id}/position", headers=admin_headers)
    assert position.status_code == 200, position.text
    body = position.json()
    assert body["device_id"] == device_id
    assert body["seq"] == 2
    assert body["lat"] == pytest.approx(-33.918)
    assert body["ts"].endswith(("Z", "+00:00"))

    track = api.get(
        f"/api/v1/subjects/{subject_id}/track",
        params={"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        headers=admin_headers,
    )
    assert track.status_code == 200, track.text
    features = track.json()["features"]
    assert features[0]["geometry"]["type"] == "LineString"
    points = [f for f in features if f["geometry"]["type"] == "Point"]
    assert [p["properties"]["seq"] for p in points] == [0, 1, 2]
    assert points[0]["geometry"]["coordinates"] == [18.42, pytest.approx(-33.92)]  # lon, lat

    audited = count(
        settings.database_url,
        "SELECT count(*) FROM audit_log WHERE subject_id = %s AND action IN ('position', 'track')",
        (subject_id,),
    )
    assert audited == 2


def test_same_fixes_published_twice_are_stored_once(settings, provision, running_ingest):
    device_id = fresh_id("tag")
    password = provision(device_id)
    device = connect(settings.mqtt_device_url, device_id, password)
    now = time.time()
    single = [
        (
            f"em/v1/{device_id}/fix",
            json.dumps({"ts": now - i, "lat": 51.5, "lon": -0.12, "acc": 5, "seq": i}).encode(),
        )
        for i in range(50)
    ]
    batch = (
        f"em/v1/{device_id}/fix",
        json.dumps({"fixes": [json.loads(p) for _, p in single[:25]]}).encode(),
    )
    publish_all(device, single)
    publish_all(device, single)  # the device repeats everything
    publish_all(device, [batch])  # and uploads half of it again as a batch
    device.disconnect()
    query = "SELECT count(*) FROM fixes WHERE device_id = %s"
    assert wait_for(lambda: count(settings.database_url, query, (device_id,)) >= 50)
    time.sleep(1.0)  # let the repeats arrive too
    assert count(settings.database_url, query, (device_id,)) == 50


def test_events_and_status_are_stored(settings, provision, running_ingest):
    device_id = fresh_id("tag")
    device = connect(settings.mqtt_device_url, device_id, provision(device_id))
    now = time.time()
    events = {
        "events": [
            {"ts": now - 5, "type": "battery_low", "batt": 14},
            {"ts": now - 4, "type": "strap_tamper", "detail": {"circuit": "open"}},
        ]
    }
    publish_all(
        device,
        [
            (f"em/v1/{device_id}/event", json.dumps(events).encode()),
            (f"em/v1/{device_id}/event", json.dumps({"ts": now, "type": "heartbeat"}).encode()),
        ],
    )
    device.publish(f"em/v1/{device_id}/status", "online", qos=1, retain=True).wait_for_publish(5)
    device.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM device_events WHERE device_id = %s",
                (device_id,),
            )
            == 3
        )
    )
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM device_status WHERE device_id = %s AND status = 'online'",
                (device_id,),
            )
            == 1
        )
    )


def test_owntracks_phone_location_and_lwt(settings, provision, running_ingest):
    device_id = fresh_id("phone")
    topic = f"owntracks/{fresh_id('user')}/{device_id}"
    password = provision(device_id, "phone", topic)
    # the app's Client ID setting names the device: the broker accepts no other for its account
    phone = connect(settings.mqtt_device_url, device_id, password, client_id=device_id)
    now = int(time.time())
    location = {
        "_type": "location",
        "lat": 52.52,
        "lon": 13.405,
        "tst": now,
        "acc": 12,
        "batt": 77,
        "vel": 36,
        "tid": "ph",
    }
    publish_all(
        phone,
        [
            (topic, json.dumps(location).encode()),
            (topic, json.dumps({"_type": "lwt", "tst": now}).encode()),
        ],
    )
    phone.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM fixes f WHERE device_id = %s"
                f" AND abs({value('spd', 'f')} - 10) < 0.01",
                (device_id,),
            )
            == 1
        )
    )
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM device_status WHERE device_id = %s AND status='offline'",
                (device_id,),
            )
            == 1
        )
    )
