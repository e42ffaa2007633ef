"""docs/phones.md is what an installer follows, so its configuration files are tested as
written: every key is one the OwnTracks apps know (the booklet's `_type=configuration` list), the
values the platform depends on are the right ones, and the files, filled with a real phone's
credentials, work: the MQTT one connects to the real broker and its location is stored, the HTTP
one posts to the real API."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import psycopg

from tagwatch.settings import MqttEndpoint
from tests.support import connect, count, fresh_id, publish_all, wait_for

GUIDE = Path(__file__).parents[2] / "docs" / "phones.md"
EXAMPLE_DEVICE = "phone-0042"
# The configuration keys of owntracks/booklet docs/tech/json.md, "_type=configuration", as listed
# there (iOS and Android together), plus `_type`.
BOOKLET_KEYS = frozenset(
    [
        "_type",
        "adapt",
        "allowRemoteLocation",
        "allowinvalidcerts",
        "auth",
        "autostartOnBoot",
        "cleanSession",
        "clientId",
        "clientpkcs",
        "cmd",
        "connectionTimeoutSeconds",
        "days",
        "debugLog",
        "deviceId",
        "downgrade",
        "encryptionKey",
        "extendedData",
        "host",
        "httpHeaders",
        "ignoreInaccurateLocations",
        "ignoreStaleLocations",
        "keepalive",
        "locatorDisplacement",
        "locatorInterval",
        "locatorPriority",
        "locked",
        "maxHistory",
        "mode",
        "monitoring",
        "mqttProtocolLevel",
        "notificationLocation",
        "opencageApiKey",
        "osmTemplate",
        "osmCopyright",
        "passphrase",
        "password",
        "pegLocatorFastestIntervalToInterval",
        "ping",
        "port",
        "positions",
        "pubTopicBase",
        "pubRetain",
        "pubQos",
        "ranging",
        "remoteConfiguration",
        "sub",
        "subTopic",
        "subQos",
        "tid",
        "tls",
        "tlsClientCrtPassword",
        "url",
        "username",
        "ws",
        "waypoints",
    ]
)
MQTT_MODE, HTTP_MODE = 0, 3


def guide_configurations() -> dict[int, str]:
    """The guide's configuration files by mode, as text."""
    blocks = re.findall(r"```json\n(.*?)```", GUIDE.read_text(), re.S)
    found = {}
    for block in blocks:
        config = json.loads(block)
        if config.get("_type") == "configuration":
            found[config["mode"]] = block
    return found


def filled(block: str, device_id: str, **values: Any) -> dict[str, Any]:
    """The file as an installer fills it in: the example device id replaced by the real one,
    and the secrets from the registration."""
    config: dict[str, Any] = json.loads(block.replace(EXAMPLE_DEVICE, device_id))
    for key, value in values.items():
        assert key in config, f"the guide's file has no {key}"
        config[key] = value
    return config


def test_the_guide_has_an_mqtt_and_an_http_configuration_of_known_keys():
    configs = guide_configurations()
    assert set(configs) == {MQTT_MODE, HTTP_MODE}
    for block in configs.values():
        unknown = set(json.loads(block)) - BOOKLET_KEYS
        assert not unknown, f"keys the apps do not know: {unknown}"


def test_the_mqtt_configuration_says_what_the_broker_demands():
    config = json.loads(guide_configurations()[MQTT_MODE])
    assert config["port"] == 8883 and config["tls"] is True and config["auth"] is True
    # the broker pins each account to its client id; the apps' default is "user deviceId"
    assert config["clientId"] == config["username"] == EXAMPLE_DEVICE
    assert config["pubTopicBase"].startswith(f"owntracks/{EXAMPLE_DEVICE}/")
    assert config["monitoring"] in (1, 2)  # quiet (-1) and manual (0) raise an alert
    assert config["cmd"] is True  # pursuit and victim notices are commands


def test_the_mqtt_configuration_filled_in_connects_and_its_location_is_stored(
    settings, provision, running_ingest
):
    device_id = fresh_id("guide-phone")
    topic = f"owntracks/{device_id}/p1"
    password = provision(device_id, "phone", topic)
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url)
    config = filled(
        guide_configurations()[MQTT_MODE],
        device_id,
        host=endpoint.host,
        port=endpoint.port,
        password=password,
        encryptionKey="",
    )
    assert config["pubTopicBase"] == topic
    url = f"mqtts://{config['host']}:{config['port']}"
    assert url.split("?", maxsplit=1)[0] == settings.mqtt_device_url.split("?")[0]
    phone = connect(settings.mqtt_device_url, config["username"], password, config["clientId"])
    tst = int(time.time())
    location = {"_type": "location", "lat": 52.37, "lon": 4.9, "acc": 12, "tst": tst, "tid": "p1"}
    publish_all(phone, [(config["pubTopicBase"], json.dumps(location).encode())])
    phone.disconnect()
    assert wait_for(
        lambda: (
            count(
                settings.database_url,
                "SELECT count(*) FROM fixes WHERE device_id = %s",
                (device_id,),
            )
            == 1
        ),
        20,
    )


def test_the_http_configuration_filled_in_posts_to_the_api(
    settings, provision, api, running_ingest
):
    device_id = fresh_id("guide-http")
    password = provision(device_id, "phone", f"owntracks/{device_id}/p1")
    config = filled(guide_configurations()[HTTP_MODE], device_id, password=password)
    assert config["auth"] is True and config["url"].endswith("/owntracks")
    path = "/" + config["url"].split("/", 3)[3]  # the guide's host is an example
    credentials = base64.b64encode(f"{config['username']}:{config['password']}".encode()).decode()
    tst = int(time.time())
    body = {"_type": "location", "lat": 52.37, "lon": 4.9, "acc": 9, "tst": tst, "tid": "p1"}
    answer = api.post(
        path,
        content=json.dumps(body),
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and answer.json() == []
    with psycopg.connect(settings.database_url) as conn:
        assert wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,)
                ).fetchone()
                == (1,)
            ),
            20,
        )


def traccar_settings() -> dict[str, str]:
    """The guide's Traccar Client table: setting → value, as an installer reads it."""
    section = GUIDE.read_text().split("## Traccar Client", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| (.+?) \|$", section, re.M)
    return {name: value for name, value in rows if name not in ("setting (Traccar Client)", "---")}


def test_the_traccar_client_settings_followed_as_written_store_a_position(
    settings, api, login, running_ingest
):
    """Register the phone the way the guide says (its API body), put `osmand_url` in Server URL
    and the device id in Device identifier, and send what the Android client sends: GET to the
    server URL with its own parameters appended. The guide also says commands cannot reach it."""
    table = traccar_settings()
    assert {"Device identifier", "Server URL", "Offline buffering"} <= set(table)
    assert "osmand_url" in table["Server URL"] and "id" in table["Device identifier"]
    guide = GUIDE.read_text()
    body_text = re.search(r"`POST /api/v1/devices` with `(\{.*?\})`", guide)
    assert body_text is not None
    device_id = fresh_id("guide-traccar")
    body = json.loads(body_text.group(1).replace("phone-0043", device_id))
    assert body == {"id": device_id, "kind": "phone", "osmand": True}
    created = api.post("/api/v1/devices", json=body, headers=login("admin", ["*"]))
    assert created.status_code == 201, created.text
    server_url = created.json()["osmand_url"]
    path = "/" + server_url.split("/", 3)[3]  # the answer's host is the configured public URL
    tst = int(time.time()) - 20
    query = (
        f"id={device_id}&timestamp={tst}&lat=52.37&lon=4.9&speed=0&bearing=0&accuracy=11&batt=80"
    )
    assert api.get(f"{path}?{query}").status_code == 200
    assert wait_for(
        lambda: (
            count(settings.database_url, "SELECT count(*) FROM fixes WHERE device_id = %s",
                  (device_id,))
            == 1
        ),
        20,
    )  # fmt: skip
    assert "cannot receive commands" in guide
