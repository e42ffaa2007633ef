"""Login throttling shared by every API process, and token revocation on logout and on a
password change."""

from __future__ import annotations

import time

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import hash_password
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "right-pass-1"
TOKEN_URL = "/api/v1/auth/token"


def _user(settings, role: str = "operator", regions: tuple[str, ...] = ("*",)) -> str:
    username = fresh_id(f"h-{role}")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password(PASSWORD), role, list(regions)),
        )
    return username


def _login(client: TestClient, username: str, password: str = PASSWORD):
    return client.post(TOKEN_URL, data={"username": username, "password": password})


def _bearer(response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_lockout_after_five_failures_even_with_the_right_password(api, settings):
    username = _user(settings)
    for _ in range(4):
        assert _login(api, username, "wrong").status_code == 401
    fifth = _login(api, username, "wrong")
    assert fifth.status_code == 429
    assert "locked" in fifth.json()["detail"]
    assert 0 < int(fifth.headers["Retry-After"]) <= 900
    right = _login(api, username)
    assert right.status_code == 429
    assert int(right.headers["Retry-After"]) > 0


@pytest.fixture(scope="module")
def strict(settings):
    """Settings that lock after 3 failures (argon2 makes every failed login cost time)."""
    return settings.model_copy(update={"login_max_failures": 3})


def test_failures_are_shared_across_api_processes_and_success_resets(strict, settings):
    """Two app instances (own pools, nothing shared but the database) count together."""
    username = _user(settings)
    with TestClient(create_app(strict)) as one, TestClient(create_app(strict)) as two:
        assert _login(one, username, "wrong").status_code == 401
        assert _login(two, username, "wrong").status_code == 401
        assert _login(one, username, "wrong").status_code == 429
        assert _login(two, username).status_code == 429
        # Lifted by hand (as an admin's password reset does); then a success clears the count.
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM login_throttle WHERE username = %s", (username,))
        assert _login(two, username, "wrong").status_code == 401
        assert _login(one, username, "wrong").status_code == 401
        assert _login(two, username).status_code == 200
        assert _login(one, username, "wrong").status_code == 401
        assert _login(two, username, "wrong").status_code == 401
        assert _login(one, username).status_code == 200


def test_unknown_usernames_lock_alike_and_locks_expire(settings):
    quick = settings.model_copy(update={"login_max_failures": 2, "login_lockout_s": 1.5})
    username = _user(settings)
    ghost = fresh_id("nobody")
    with TestClient(create_app(quick)) as client:
        assert _login(client, username, "wrong").status_code == 401
        assert _login(client, username, "wrong").status_code == 429
        assert _login(client, username).status_code == 429
        assert _login(client, ghost, "wrong").status_code == 401
        assert _login(client, ghost, "wrong").status_code == 429
        time.sleep(1.6)
        assert _login(client, username).status_code == 200


def test_logout_revokes_only_the_presented_token(api, settings):
    username = _user(settings)
    first, second = _bearer(_login(api, username)), _bearer(_login(api, username))
    assert api.get("/api/v1/auth/me", headers=first).json()["username"] == username
    assert api.post("/api/v1/auth/logout", headers=first).status_code == 204
    refused = api.get("/api/v1/subjects", headers=first)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert api.post("/api/v1/auth/logout", headers=first).status_code == 401
    assert api.get("/api/v1/subjects", headers=second).status_code == 200
    # Revocation lives in the database: another API process refuses the token too.
    with TestClient(create_app(settings)) as other:
        assert other.get("/api/v1/subjects", headers=first).status_code == 401
        assert other.get("/api/v1/subjects", headers=second).status_code == 200


def test_password_change_revokes_every_earlier_token(api, settings):
    username = _user(settings, "tracer", ("north",))
    first, second = _bearer(_login(api, username)), _bearer(_login(api, username))
    url = "/api/v1/auth/password"
    wrong_old = api.post(url, json={"old": "nope-nope-1", "new": "fresh-pass-2"}, headers=first)
    assert wrong_old.status_code == 403
    assert api.post(url, json={"old": PASSWORD, "new": "short"}, headers=first).status_code == 422
    same = api.post(url, json={"old": PASSWORD, "new": PASSWORD}, headers=first)
    assert same.status_code == 422
    assert "differ" in str(same.json()["detail"])
    changed = api.post(url, json={"old": PASSWORD, "new": "fresh-pass-2"}, headers=first)
    assert changed.status_code == 200
    fresh = _bearer(changed)
    for old in (first, second):
        response = api.get("/api/v1/auth/me", headers=old)
        assert response.status_code == 401
        assert "password changed" in response.json()["detail"]
    me = api.get("/api/v1/auth/me", headers=fresh).json()
    assert me == {"id": me["id"], "username": username, "role": "tracer", "regions": ["north"]}
    assert _login(api, username).status_code == 401
    assert _login(api, username, "fresh-pass-2").status_code == 200


def test_tokens_without_a_token_id_or_from_another_key_are_refused(api, settings):
    username = _user(settings)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
    assert row is not None
    exp = int(time.time()) + 600
    no_jti = jwt.encode({"sub": str(row[0]), "exp": exp}, settings.secret_key, algorithm="HS256")
    forged = jwt.encode(
        {"sub": str(row[0]), "exp": exp, "jti": "x", "gen": 0},
        "another-key-" + "k" * 32,
        algorithm="HS256",
    )
    for token in (no_jti, forged):
        response = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
