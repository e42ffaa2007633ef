"""Phones posting over HTTP, through the real API, the real broker and a real ingest into the
real database: OwnTracks in HTTP mode and Traccar Client's OsmAnd protocol. The requests are the
apps' own (tests/fixtures/phones_http/README.md names each source)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import create_app
from tagwatch.ingest.broker_accounts import BrokerAdmin
from tagwatch.ingest.provisioning import provision_device
from tagwatch.services import free_port
from tagwatch.store.commands import queue_command_sync
from tagwatch.store.fix_columns import as_read
from tests.support import count, fresh_id, wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "phones_http"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def fill(text: str, device: str, ts: object) -> str:
    return text.replace("{id}", device).replace("{timestamp}", str(ts))


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def register(settings):
    """A device and its secret: an OwnTracks phone's MQTT password, or an OsmAnd token."""

    def make(osmand: bool) -> tuple[str, str]:
        device_id = fresh_id("osm" if osmand else "otp")
        topic = None if osmand else f"owntracks/{device_id}/p"
        with psycopg.connect(settings.database_url) as conn:
            secret = provision_device(
                conn,
                BrokerAdmin.from_url(settings.mqtt_admin_url),
                device_id,
                "phone",
                topic,
                osmand=osmand,
            )
        return device_id, secret

    return make


def fixes(settings, device_id: str) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(  # the numbers as read, whichever columns hold them (0027)
            "SELECT extract(epoch FROM ts), lat, lon, acc, alt, spd, hdg, batt FROM"
            f" (SELECT {as_read('x')} FROM fixes x) f WHERE device_id = %s ORDER BY ts",
            (device_id,),
        ).fetchall()


def stored(settings, device_id: str, n: int = 1) -> list[tuple]:
    assert wait_for(lambda: len(fixes(settings, device_id)) >= n), f"{device_id}: not stored"
    return fixes(settings, device_id)


def dead_letters(settings, topic: str) -> list[tuple[str, str]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT reason, detail FROM dead_letters WHERE topic = %s", (topic,)
        ).fetchall()


# ------------------------------------------------------------------------------- OwnTracks


def owntracks_post(api, device_id: str, password: str, ts: int) -> object:
    case = fixture("owntracks_http_location.json")
    body = {**case["body"], "tst": ts}
    headers = {**case["headers"], **basic(device_id, password)}
    return api.post("/owntracks", content=json.dumps(body), headers=headers)


def test_owntracks_http_location_is_stored(settings, api, running_ingest, register):
    device_id, password = register(osmand=False)
    ts = int(time.time()) - 30
    response = owntracks_post(api, device_id, password, ts)
    assert response.status_code == 200, response.text
    assert response.json() == []  # the JSON array the apps expect
    ((epoch, lat, lon, acc, alt, spd, hdg, batt),) = stored(settings, device_id)
    expected = fixture("owntracks_http_location.json")["expected"]
    assert epoch == ts and (lat, lon) == (expected["lat"], expected["lon"])
    assert (acc, alt, hdg, batt) == (75.0, 13.0, 270.0, 88.0)
    assert spd == pytest.approx(expected["spd_mps"])  # 54 km/h


def test_the_answer_carries_the_phones_due_commands_once(settings, api, running_ingest, register):
    """An app in HTTP mode reads commands only in the answer to its post (booklet
    docs/tech/http.md): a queued command is handed out there, in the apps' own format, once."""
    device_id, password = register(osmand=False)
    with psycopg.connect(settings.database_url) as conn:
        queue_command_sync(conn, device_id, "locate_now", {}, ("test", "admin"), 600)
    ts = int(time.time()) - 30
    first = owntracks_post(api, device_id, password, ts)
    assert first.status_code == 200, first.text
    assert first.json() == [{"_type": "cmd", "action": "reportLocation"}]
    again = owntracks_post(api, device_id, password, ts + 1)
    assert again.status_code == 200 and again.json() == []
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute(
            "SELECT state, channel FROM device_commands WHERE device_id = %s", (device_id,)
        ).fetchall() == [("sent", "http")]


def test_wrong_password_is_401_and_nothing_is_stored(settings, api, running_ingest, register):
    device_id, password = register(osmand=False)
    ts = int(time.time()) - 30
    refused = owntracks_post(api, device_id, password + "x", ts - 10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    unknown = owntracks_post(api, fresh_id("nobody"), password, ts - 10)
    assert unknown.status_code == 401 and unknown.json() == refused.json()
    assert api.post("/owntracks", content=b"{}").status_code == 401
    # a barrier: the right password afterwards is stored, and only its fix
    assert owntracks_post(api, device_id, password, ts).status_code == 200
    assert [row[0] for row in stored(settings, device_id)] == [ts]


def test_an_osmand_token_is_not_an_owntracks_password(api, register):
    device_id, token = register(osmand=True)
    assert owntracks_post(api, device_id, token, int(time.time())).status_code == 403


def test_oversize_body_is_413(api, register):
    device_id, password = register(osmand=False)
    body = b'{"_type": "location", "pad": "' + b"x" * (256 * 1024) + b'"}'
    response = api.post("/owntracks", content=body, headers=basic(device_id, password))
    assert response.status_code == 413


# ------------------------------------------------------------------------------- OsmAnd


def android_query(device_id: str, ts: int, key: str = "query") -> str:
    return fill(fixture("traccar_android_query.json")[key], device_id, ts)


def check_android_fix(row: tuple, ts: int) -> None:
    epoch, lat, lon, acc, alt, spd, hdg, batt = row
    expected = fixture("traccar_android_query.json")["expected"]
    assert epoch == ts and (lat, lon) == (expected["lat"], expected["lon"])
    assert spd == pytest.approx(expected["spd_mps"], rel=1e-6)  # 10 knots in m/s
    assert (acc, alt, hdg, batt) == (8.0, 2.0, 90.0, 87.0)


def test_osmand_get_with_the_android_query_string(settings, api, running_ingest, register):
    device_id, token = register(osmand=True)
    ts = int(time.time()) - 30
    response = api.get(f"/osmand/{token}?{android_query(device_id, ts)}")
    assert response.status_code == 200 and response.content == b""
    check_android_fix(stored(settings, device_id)[0], ts)


def test_osmand_post_with_parameters_in_the_url_and_an_empty_body(
    settings, api, running_ingest, register
):
    """What the Android client has sent since 2016 (RequestManager: POST, no body)."""
    device_id, token = register(osmand=True)
    ts = int(time.time()) - 30
    assert api.post(f"/osmand/{token}?{android_query(device_id, ts)}").status_code == 200
    check_android_fix(stored(settings, device_id)[0], ts)


def test_osmand_post_form(settings, api, running_ingest, register):
    device_id, token = register(osmand=True)
    ts = int(time.time()) - 30
    response = api.post(
        f"/osmand/{token}",
        content=android_query(device_id, ts),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    check_android_fix(stored(settings, device_id)[0], ts)


def test_osmand_json_of_the_current_client(settings, api, running_ingest, register):
    device_id, token = register(osmand=True)
    ts = int(time.time()) - 30
    iso = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    case = fixture("traccar_client_json.json")
    body = fill(json.dumps(case["body"]), device_id, iso)
    response = api.post(
        f"/osmand/{token}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    ((epoch, lat, lon, acc, alt, spd, hdg, batt),) = stored(settings, device_id)
    assert epoch == ts and (lat, lon) == (52.370216, 4.895168)
    assert spd == pytest.approx(3.2, rel=1e-6)  # m/s in the JSON: unchanged
    assert (acc, hdg, batt) == (12.5, 181.5, 64.0)
    assert alt == pytest.approx(4.1, rel=1e-6)


def test_malformed_osmand_request_is_a_dead_letter_with_its_reason(
    settings, api, running_ingest, register
):
    device_id, token = register(osmand=True)
    bad = f"id={device_id}&lon=4.9&timestamp={int(time.time())}"  # no lat
    assert api.get(f"/osmand/{token}?{bad}").status_code == 200  # the broker has it
    topic = f"osmand/{device_id}/query"
    assert wait_for(lambda: dead_letters(settings, topic))
    ((reason, detail),) = dead_letters(settings, topic)
    assert reason == "schema_violation" and "lat" in detail
    assert not fixes(settings, device_id)


def test_a_token_of_device_a_cannot_post_as_device_b(settings, api, running_ingest, register):
    a, token_a = register(osmand=True)
    b, token_b = register(osmand=True)
    ts = int(time.time()) - 30
    for request in (
        lambda: api.get(f"/osmand/{token_a}?{android_query(b, ts)}"),
        lambda: api.post(
            f"/osmand/{token_a}",
            content=json.dumps({"device_id": b, "location": {"timestamp": "x"}}),
            headers={"Content-Type": "application/json"},
        ),
        # B's id twice, A's once: which device would it be? refused
        lambda: api.get(f"/osmand/{token_a}?id={a}&{android_query(b, ts)}"),
    ):
        assert request().status_code in {400, 401}
    wrong_b = token_b[:-1] + ("y" if token_b.endswith("x") else "x")  # always another token
    assert api.get(f"/osmand/{wrong_b}?{android_query(b, ts)}").status_code == 401
    assert api.get(f"/osmand/{token_a}?lat=1&lon=2").status_code == 401  # no id at all
    # a barrier: A's own request afterwards is stored; nothing ever reached B
    assert api.get(f"/osmand/{token_a}?{android_query(a, ts)}").status_code == 200
    stored(settings, a)
    assert not fixes(settings, b)
    assert (
        count(
            settings.database_url,
            "SELECT count(*) FROM dead_letters WHERE topic LIKE %s",
            (f"%{b}%",),
        )
        == 0
    )


def test_an_owntracks_password_is_not_an_osmand_token(api, register):
    device_id, password = register(osmand=False)
    query = android_query(device_id, int(time.time()))
    assert api.get(f"/osmand/{password}?{query}").status_code == 403


# ------------------------------------------------------------------------------- broker down


def test_broker_unreachable_is_503_never_500(settings, register):
    device_id, password = register(osmand=False)
    url = settings.mqtt_api_url
    host_port = url.split("@", 1)[1].split("?", 1)[0]
    dead = url.replace(host_port, f"127.0.0.1:{free_port()}")
    offline = settings.model_copy(update={"mqtt_api_url": dead, "intake_publish_timeout_s": 1.0})
    with TestClient(create_app(offline)) as client:
        response = owntracks_post(client, device_id, password, int(time.time()))
    assert response.status_code == 503
    assert response.headers["retry-after"]


# ------------------------------------------------------------------------------- registration


def test_devices_registered_through_the_api_post_with_what_it_showed_once(
    settings, api, login, running_ingest
):
    admin = login("admin", ["*"])
    osmand_id, phone_id = fresh_id("osm"), fresh_id("otp")
    created = api.post(
        "/api/v1/devices", json={"id": osmand_id, "kind": "phone", "osmand": True}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["osmand"] is True and body["mqtt_password"] is None and body["publish_topics"] == []
    path = "/" + body["osmand_url"].split("/", 3)[3]  # /osmand/{token}
    ts = int(time.time()) - 30
    assert api.get(f"{path}?{android_query(osmand_id, ts)}").status_code == 200
    stored(settings, osmand_id)

    created = api.post(
        "/api/v1/devices",
        json={"id": phone_id, "kind": "phone", "owntracks_topic": f"owntracks/{phone_id}/p"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["owntracks_http_url"].endswith("/owntracks") and body["osmand_url"] is None
    assert owntracks_post(api, phone_id, body["mqtt_password"], ts).status_code == 200
    stored(settings, phone_id)
    bad = api.post(
        "/api/v1/devices",
        json={"id": fresh_id("t"), "kind": "tag", "osmand": True},
        headers=admin,
    )
    assert bad.status_code == 422


# ------------------------------------------------------------------------------- throttling


def test_wrong_secrets_are_throttled_like_logins_but_a_right_one_always_passes(
    settings, running_ingest, register
):
    """Three failures spend this address's budget (TAGWATCH_LOGIN_ADDRESS_MAX_FAILURES); the
    next wrong guess is 429 with Retry-After, never checked; the phone's own secret from the same
    (say, carrier-NAT) address is still accepted."""
    device_id, password = register(osmand=False)
    strict = settings.model_copy(update={"login_address_max_failures": 3})
    # RFC 2544's benchmarking range: the login tests count their own addresses in 198.51.100.x
    # on the same database, and one of theirs must not be throttled by these guesses
    address = f"198.18.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    ts = int(time.time()) - 30
    with TestClient(create_app(strict), client=(address, 40000)) as client:
        answers = [
            owntracks_post(client, device_id, f"guess-{i}", ts).status_code for i in range(5)
        ]
        assert answers[:3] == [401, 401, 401]
        assert answers[3:] == [429, 429]
        refused = owntracks_post(client, device_id, "guess-5", ts)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert owntracks_post(client, device_id, password, ts).status_code == 200
    assert [row[0] for row in stored(settings, device_id)] == [ts]
