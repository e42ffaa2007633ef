"""Subjects, devices and assignments through the API: validation, conflicts and region scope."""

from __future__ import annotations

import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def regions(api, login) -> tuple[str, str]:
    admin = login("admin", ["*"])
    north, south = fresh_id("north"), fresh_id("south")
    for region in (north, south):
        assert (
            api.post(
                "/api/v1/regions", json={"id": region, "name": region}, headers=admin
            ).status_code
            == 201
        )
    return north, south


def test_wrong_password_gets_401(api):
    response = api.post("/api/v1/auth/token", data={"username": "nobody", "password": "x"})
    assert response.status_code == 401
    assert response.json() == {"detail": "incorrect username or password"}


def test_subject_validation_is_422_with_reasons(api, login, regions):
    admin = login("admin", ["*"])
    bad_zone = api.post(
        "/api/v1/subjects",
        json={"name": "X", "region_id": regions[0], "timezone": "Mars/Olympus"},
        headers=admin,
    )
    assert bad_zone.status_code == 422
    assert "time zone" in str(bad_zone.json()["detail"])
    unknown_region = api.post(
        "/api/v1/subjects", json={"name": "X", "region_id": "nowhere"}, headers=admin
    )
    assert unknown_region.status_code == 422
    assert api.get("/api/v1/subjects/abc", headers=admin).status_code == 422


def test_region_scope_hides_other_regions(api, login, regions):
    north, south = regions
    supervisor_north = login("supervisor", [north])
    created = api.post(
        "/api/v1/subjects", json={"name": "N", "region_id": north}, headers=supervisor_north
    )
    assert created.status_code == 201
    refused = api.post(
        "/api/v1/subjects", json={"name": "S", "region_id": south}, headers=supervisor_north
    )
    assert refused.status_code == 403
    southern = api.post(
        "/api/v1/subjects", json={"name": "S", "region_id": south}, headers=login("admin", ["*"])
    ).json()
    operator_north = login("operator", [north])
    assert api.get(f"/api/v1/subjects/{southern['id']}", headers=operator_north).status_code == 404
    assert (
        api.get(f"/api/v1/subjects/{southern['id']}/position", headers=operator_north).status_code
        == 404
    )
    listed = api.get("/api/v1/subjects", headers=operator_north).json()
    assert {s["region_id"] for s in listed} == {north}
    assert (
        api.post(
            "/api/v1/subjects", json={"name": "Y", "region_id": north}, headers=operator_north
        ).status_code
        == 403
    )


def test_device_creation_shows_password_once_and_conflicts(api, login):
    admin = login("admin", ["*"])
    device_id = fresh_id("tag")
    created = api.post("/api/v1/devices", json={"id": device_id}, headers=admin)
    assert created.status_code == 201
    assert created.json()["mqtt_password"]
    assert created.json()["publish_topics"] == [f"em/v1/{device_id}/#"]
    again = api.post("/api/v1/devices", json={"id": device_id}, headers=admin)
    assert again.status_code == 409
    read = api.get(f"/api/v1/devices/{device_id}", headers=admin).json()
    assert "mqtt_password" not in read
    phone_without_topic = api.post(
        "/api/v1/devices", json={"id": fresh_id("p"), "kind": "phone"}, headers=admin
    )
    assert phone_without_topic.status_code == 422
    assert api.post("/api/v1/devices", json={"id": "bad id!"}, headers=admin).status_code == 422


def test_overlapping_assignment_is_409_and_naive_time_is_422(api, login, regions):
    admin = login("admin", ["*"])
    subject = api.post(
        "/api/v1/subjects", json={"name": "Z", "region_id": regions[0]}, headers=admin
    ).json()
    device_id = fresh_id("tag")
    api.post("/api/v1/devices", json={"id": device_id}, headers=admin)
    url = f"/api/v1/subjects/{subject['id']}/assignments"
    ok = api.post(
        url, json={"device_id": device_id, "from": "2026-01-01T00:00:00+02:00"}, headers=admin
    )
    assert ok.status_code == 201
    overlap = api.post(
        url, json={"device_id": device_id, "from": "2026-06-01T00:00:00Z"}, headers=admin
    )
    assert overlap.status_code == 409
    naive = api.post(
        url, json={"device_id": device_id, "from": "2026-06-01T00:00:00"}, headers=admin
    )
    assert naive.status_code == 422


def test_readyz_and_healthz(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
