"""Users and webhook subscriptions through the API: admin only, region-scoped, validated,
no password hash or webhook secret ever read back, and every change audited."""

from __future__ import annotations

import psycopg
import pytest

from tagwatch.store.webhook_secrets import SecretBox
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "pass-word-1"


@pytest.fixture(scope="module")
def regions(api, login) -> tuple[str, str]:
    admin = login("admin", ["*"])
    north, south = fresh_id("north"), fresh_id("south")
    for region in (north, south):
        response = api.post("/api/v1/regions", json={"id": region, "name": region}, headers=admin)
        assert response.status_code == 201
    return north, south


@pytest.fixture(scope="module")
def admin(login) -> dict[str, str]:
    return login("admin", ["*"])


def _token(api, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = api.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _create_user(api, admin, role="operator", regions=("*",), password=PASSWORD) -> dict:
    body = {"username": fresh_id(role), "role": role, "regions": list(regions)}
    response = api.post("/api/v1/users", json={**body, "password": password}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("role", ["supervisor", "operator", "tracer"])
def test_only_admins_reach_users_and_webhooks(api, login, role):
    headers = login(role, ["*"])
    for method, url in [
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/users/1"),
        ("PATCH", "/api/v1/users/1"),
        ("POST", "/api/v1/users/1/password"),
        ("GET", "/api/v1/webhooks"),
        ("POST", "/api/v1/webhooks"),
        ("GET", "/api/v1/webhooks/1"),
        ("PATCH", "/api/v1/webhooks/1"),
        ("DELETE", "/api/v1/webhooks/1"),
        ("POST", "/api/v1/webhooks/1/secret"),
    ]:
        response = api.request(method, url, headers=headers, json={})
        assert response.status_code == 403, (method, url, response.text)
        assert "may not" in response.json()["detail"]


def test_create_user_hashes_the_password_and_never_returns_it(api, admin, settings, regions):
    created = _create_user(api, admin, "supervisor", [regions[0]])
    assert set(created) == {
        "id",
        "username",
        "role",
        "regions",
        "disabled",
        "created_at",
        "updated_at",
        "password_changed_at",
        "tracing_unit_id",
    }
    assert created["regions"] == [regions[0]] and created["role"] == "supervisor"
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT password_hash FROM users WHERE id = %s", (created["id"],)
        ).fetchone()
        audited = conn.execute(
            "SELECT detail::text FROM audit_log WHERE action = 'user_create'"
            " AND (detail->>'user_id')::bigint = %s",
            (created["id"],),
        ).fetchone()
    assert row is not None and row[0].startswith("$argon2id$")
    assert audited is not None and PASSWORD not in audited[0] and "argon2" not in audited[0]
    me = api.get("/api/v1/auth/me", headers=_token(api, created["username"])).json()
    assert me["role"] == "supervisor"
    listed = api.get("/api/v1/users", params={"limit": 1000}, headers=admin).text
    read = api.get(f"/api/v1/users/{created['id']}", headers=admin).text
    for text in (listed, read):
        assert "argon2" not in text and "password_hash" not in text


def test_user_validation_is_4xx_with_reasons(api, admin, regions):
    def post(**changes):
        body = {"username": fresh_id("u"), "role": "operator", "regions": ["*"]}
        return api.post(
            "/api/v1/users", json={**body, "password": PASSWORD, **changes}, headers=admin
        )

    assert post(role="root").status_code == 422
    assert post(password="short").status_code == 422
    assert post(username="has space").status_code == 422
    assert post(regions=[]).status_code == 422
    assert post(regions=["bad region!"]).status_code == 422
    assert post(password_hash="x").status_code == 422  # no field smuggling
    unknown = post(regions=["atlantis"])
    assert unknown.status_code == 422
    assert "unknown region 'atlantis'" in unknown.json()["detail"]
    taken = _create_user(api, admin)["username"]
    again = post(username=taken)
    assert again.status_code == 409
    assert "taken" in again.json()["detail"]
    assert api.get("/api/v1/users/abc", headers=admin).status_code == 422
    assert api.get("/api/v1/users/999999999", headers=admin).status_code == 404
    assert api.get("/api/v1/users", params={"limit": 0}, headers=admin).status_code == 422


def test_list_pages_with_a_cursor(api, admin):
    made = [_create_user(api, admin, "tracer")["id"] for _ in range(3)]
    after = made[0] - 1
    seen: list[int] = []
    while True:
        page = api.get(
            "/api/v1/users",
            params={"limit": 2, "after_id": after, "role": "tracer"},
            headers=admin,
        ).json()
        if not page:
            break
        assert len(page) <= 2
        seen.extend(u["id"] for u in page)
        after = page[-1]["id"]
    assert seen == sorted(seen)
    assert set(made) <= set(seen)


def test_update_disable_and_reset_take_effect_at_once(api, admin, regions):
    user = _create_user(api, admin, "operator", [regions[0]])
    headers = _token(api, user["username"])
    url = f"/api/v1/users/{user['id']}"
    changed = api.patch(url, json={"role": "supervisor", "regions": [regions[1]]}, headers=admin)
    assert changed.status_code == 200
    assert (changed.json()["role"], changed.json()["regions"]) == ("supervisor", [regions[1]])
    assert api.get("/api/v1/auth/me", headers=headers).json()["regions"] == [regions[1]]
    assert api.patch(url, json={"role": "king"}, headers=admin).status_code == 422
    assert api.patch(url, json={"password": "x" * 10}, headers=admin).status_code == 422

    reset = api.post(f"{url}/password", json={"password": "brand-new-1"}, headers=admin)
    assert reset.status_code == 204
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 401  # revoked
    assert (
        api.post(
            "/api/v1/auth/token", data={"username": user["username"], "password": PASSWORD}
        ).status_code
        == 401
    )
    headers = _token(api, user["username"], "brand-new-1")
    assert api.patch(url, json={"disabled": True}, headers=admin).json()["disabled"] is True
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 401
    assert api.patch(url, json={"disabled": False}, headers=admin).status_code == 200
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 200


def test_admin_cannot_disable_or_demote_themselves(api, admin):
    me = api.get("/api/v1/auth/me", headers=admin).json()
    for change in ({"disabled": True}, {"role": "operator"}):
        response = api.patch(f"/api/v1/users/{me['id']}", json=change, headers=admin)
        assert response.status_code == 409
    assert api.get("/api/v1/auth/me", headers=admin).status_code == 200


def test_regional_admin_manages_only_their_regions(api, admin, login, regions):
    north, south = regions
    northern_admin = login("admin", [north])
    southerner = _create_user(api, admin, "operator", [south])
    northerner = _create_user(api, northern_admin, "operator", [north])
    for refused in ([south], ["*"], [north, south]):
        response = api.post(
            "/api/v1/users",
            json={
                "username": fresh_id("x"),
                "role": "operator",
                "regions": refused,
                "password": PASSWORD,
            },
            headers=northern_admin,
        )
        assert response.status_code == 403, refused
    assert api.get(f"/api/v1/users/{southerner['id']}", headers=northern_admin).status_code == 404
    assert (
        api.patch(
            f"/api/v1/users/{southerner['id']}", json={"disabled": True}, headers=northern_admin
        ).status_code
        == 404
    )
    listed = api.get("/api/v1/users", params={"limit": 1000}, headers=northern_admin).json()
    ids = {u["id"] for u in listed}
    assert northerner["id"] in ids and southerner["id"] not in ids
    assert all(set(u["regions"]) <= {north} for u in listed)
    hook = api.post(
        "/api/v1/webhooks",
        json={"name": "s", "url": "https://example.org/h", "regions": [south]},
        headers=northern_admin,
    )
    assert hook.status_code == 403


def test_webhook_secret_is_shown_once_and_never_again(api, admin, settings, regions):
    created = api.post(
        "/api/v1/webhooks",
        json={
            "name": "tracing unit north",
            "url": "https://tracing.example.org/hook",
            "regions": [regions[0]],
            "types": ["absconder", "strap_tamper"],
            "min_severity": "critical",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert len(secret) >= 32
    assert body["types"] == ["absconder", "strap_tamper"] and body["active"] is True
    given = api.post(
        "/api/v1/webhooks",
        # inactive: an active subscription to every region would get every later test's alerts
        json={
            "name": "given",
            "url": "https://given.example.org/x",
            "secret": "s" * 20,
            "active": False,
        },
        headers=admin,
    ).json()
    assert given["secret"] == "s" * 20
    assert (given["regions"], given["types"], given["min_severity"]) == (["*"], ["*"], "info")
    read = api.get(f"/api/v1/webhooks/{body['id']}", headers=admin)
    listed = api.get("/api/v1/webhooks", params={"limit": 1000}, headers=admin)
    for response in (read, listed):
        assert response.status_code == 200
        assert secret not in response.text and '"secret"' not in response.text
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT secret, secret_encrypted FROM webhook_subscriptions WHERE id = %s",
            (body["id"],),
        ).fetchone()
        audited = conn.execute(
            "SELECT string_agg(detail::text, ' ') FROM audit_log WHERE action LIKE 'webhook_%%'"
        ).fetchone()
    box = SecretBox(settings.webhook_secret_key)
    assert row is not None and row[0] is None  # encrypted at rest, never in the clear
    assert box.open(row[1]) == secret
    assert audited is not None and secret not in audited[0]

    rotated = api.post(f"/api/v1/webhooks/{body['id']}/secret", headers=admin)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != secret
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT secret, secret_encrypted FROM webhook_subscriptions WHERE id = %s",
            (body["id"],),
        ).fetchone()
    assert row is not None and row[0] is None
    assert box.open(row[1]) == rotated.json()["secret"]


def test_webhook_validation_is_422_with_reasons(api, admin):
    def post(**changes):
        return api.post(
            "/api/v1/webhooks",
            json={"name": "h", "url": "https://example.org/h", **changes},
            headers=admin,
        )

    for url in ("ftp://example.org/h", "javascript:alert(1)", "not a url", "file:///etc/passwd"):
        response = post(url=url)
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"][-1] == "url"
    bad_type = post(types=["absconder", "teleport"])
    assert bad_type.status_code == 422
    assert "unknown alert type 'teleport'" in str(bad_type.json()["detail"])
    assert post(min_severity="urgent").status_code == 422
    assert post(secret="short").status_code == 422
    assert post(regions=["atlantis"]).status_code == 422
    assert post(name="").status_code == 422
    assert post(active="maybe").status_code == 422
    assert api.patch("/api/v1/webhooks/999999999", json={}, headers=admin).status_code == 404
    assert api.delete("/api/v1/webhooks/abc", headers=admin).status_code == 422


def test_webhook_update_and_deactivate(api, admin, settings):
    hook = api.post(
        "/api/v1/webhooks", json={"name": "h", "url": "https://a.example.org/"}, headers=admin
    ).json()
    url = f"/api/v1/webhooks/{hook['id']}"
    updated = api.patch(
        url,
        json={"url": "https://b.example.org/in", "types": ["*"], "min_severity": "warning"},
        headers=admin,
    )
    assert updated.status_code == 200
    assert updated.json()["url"] == "https://b.example.org/in"
    assert updated.json()["min_severity"] == "warning"
    assert api.patch(url, json={"types": ["nope"]}, headers=admin).status_code == 422
    assert api.patch(url, json={"url": "gopher://x"}, headers=admin).status_code == 422
    assert api.patch(url, json={"secret": "x" * 20}, headers=admin).status_code == 422
    assert api.delete(url, headers=admin).status_code == 204
    assert api.get(url, headers=admin).json()["active"] is False
    inactive = api.get("/api/v1/webhooks", params={"active": False, "limit": 1000}, headers=admin)
    assert hook["id"] in {h["id"] for h in inactive.json()}
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT active, types, min_severity FROM webhook_subscriptions WHERE id = %s",
            (hook["id"],),
        ).fetchone()
    assert row == (False, ["*"], "warning")
