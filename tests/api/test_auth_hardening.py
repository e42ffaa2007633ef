"""Login throttling (per client address with exponential backoff, per user name with a budget
that never locks), shared by every API process, which address counts behind a proxy, and token
revocation on logout and on a password change.

Each test logs in from its own client addresses (``TestClient(client=...)``), as the throttle
counts per address; tests/adversarial/test_login_flood.py does the same against a real server.
"""

from __future__ import annotations

import itertools
import time

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from tagwatch.api.app import create_app
from tagwatch.api.login_throttle import RefusalCache
from tagwatch.api.security import hash_password
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "right-pass-1"
TOKEN_URL = "/api/v1/auth/token"
_addresses = itertools.count(1)


def fresh_address() -> str:
    """A documentation-range address (RFC 5737) no other test counts failures for."""
    n = next(_addresses)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def _user(settings, role: str = "operator", regions: tuple[str, ...] = ("*",)) -> str:
    username = fresh_id(f"h-{role}")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password(PASSWORD), role, list(regions)),
        )
    return username


def _client(app, address: str | None = None) -> TestClient:
    return TestClient(app, client=(address or fresh_address(), 50000))


def _login(client: TestClient, username: str, password: str = PASSWORD, **headers: str):
    return client.post(
        TOKEN_URL, data={"username": username, "password": password}, headers=headers
    )


def _bearer(response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _throttled(response, scope: str) -> int:
    """Assert a 429 of this scope with a JSON detail; return its Retry-After."""
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert detail["reason"] == f"too_many_failed_logins_{scope}"
    retry = int(response.headers["Retry-After"])
    assert retry == detail["retry_after_s"] >= 1
    return retry


def _address_row(settings, address: str) -> tuple | None:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT failures, strikes, blocked_until IS NOT NULL FROM login_address_throttle"
            " WHERE address = %s",
            (address,),
        ).fetchone()


@pytest.fixture(scope="module")
def strict(settings):
    """A name's budget of 3 per window (argon2 makes every failed login cost time)."""
    return settings.model_copy(update={"login_max_failures": 3})


def test_a_spent_name_budget_refuses_unfamiliar_addresses_even_with_the_right_password(strict):
    username = _user(strict)
    app = create_app(strict)
    with _client(app) as attacker, _client(app) as newcomer:
        for _ in range(3):
            assert _login(attacker, username, "wrong").status_code == 401
        retry = _throttled(_login(attacker, username, "wrong"), "name")
        assert 0 < retry <= 900
        # refused before the password is looked at: the right one does not get through either
        _throttled(_login(attacker, username), "name")
        _throttled(_login(newcomer, username), "name")


def test_a_familiar_address_is_not_held_back_by_the_name_budget(strict):
    """The real user's usual workstation still logs in while an attacker spent the budget."""
    username = _user(strict)
    app = create_app(strict)
    with _client(app) as desk, _client(app) as attacker:
        assert _login(desk, username).status_code == 200
        for _ in range(3):
            assert _login(attacker, username, "wrong").status_code == 401
        _throttled(_login(attacker, username), "name")
        assert _login(desk, username).status_code == 200
        # a typo at the desk is an ordinary failure, counted on the desk's address only
        assert _login(desk, username, "typo").status_code == 401
        assert _login(desk, username).status_code == 200


def test_the_name_budget_renews_with_the_window_and_is_never_a_lock(settings):
    quick = settings.model_copy(update={"login_max_failures": 2, "login_failure_window_s": 1.5})
    username, ghost = _user(settings), fresh_id("nobody")
    app = create_app(quick)
    with _client(app) as attacker, _client(app) as elsewhere:
        for name in (username, ghost):  # unknown names are counted alike: no name is revealed
            assert _login(attacker, name, "wrong").status_code == 401
            assert _login(attacker, name, "wrong").status_code == 401
            assert _throttled(_login(attacker, name), "name") <= 2
        # Renewed once the window has passed since the failures were counted; under load the
        # counted time lags the client's clock by the hashing queue, so poll (a refused login
        # with the right password is not a failure: it does not extend the window).
        time.sleep(1.6)
        deadline = time.monotonic() + 6.0
        status = _login(elsewhere, username).status_code
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.25)
            status = _login(elsewhere, username).status_code
        assert status == 200


def test_a_right_password_gives_its_reservation_back(strict):
    username = _user(strict)
    app = create_app(strict)
    with _client(app) as one, _client(app) as other:
        assert _login(one, username, "wrong").status_code == 401
        assert _login(one, username, "wrong").status_code == 401
        assert _login(one, username).status_code == 200  # not counted: 2 of 3 spent
        assert _login(other, username, "wrong").status_code == 401
        _throttled(_login(other, username, "wrong"), "name")


def test_an_address_backs_off_exponentially_whatever_names_it_tries(settings):
    backoff = settings.model_copy(update={"login_address_max_failures": 2, "login_lockout_s": 1.0})
    address = fresh_address()
    app = create_app(backoff)
    with _client(app, address) as attacker:
        waits = []
        for _round in range(3):
            for _ in range(2):
                assert _login(attacker, fresh_id("spray"), "wrong").status_code == 401
            refused = _login(attacker, fresh_id("spray"), "wrong")
            waits.append(_throttled(refused, "address"))
            time.sleep(waits[-1] + 0.1)
        assert waits == [1, 2, 4], waits
    assert _address_row(settings, address) == (0, 3, True)


def test_spoofed_x_forwarded_for_does_not_reset_the_address_count(settings):
    """Without trusted proxies the header is the client's own word: ignored."""
    backoff = settings.model_copy(update={"login_address_max_failures": 3})
    address = fresh_address()
    app = create_app(backoff)
    with _client(app, address) as attacker:
        for i in range(3):
            spoof = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            assert _login(attacker, fresh_id("spray"), "wrong", **spoof).status_code == 401
        _throttled(
            _login(attacker, fresh_id("spray"), "wrong", **{"X-Forwarded-For": "203.0.113.99"}),
            "address",
        )
    assert _address_row(settings, "203.0.113.1") is None


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings):
    proxy = "192.0.2.10"
    behind = settings.model_copy(
        update={"trusted_proxies": f"{proxy}, 192.0.2.64/28", "login_address_max_failures": 2}
    )
    app = create_app(behind)
    client, forged, hop = fresh_address(), fresh_address(), "192.0.2.70"
    with _client(app, proxy) as via_proxy:
        # the proxy appends the peer it saw; anything left of that was written by the client
        chain = {"X-Forwarded-For": f"{forged}, {client}, {hop}"}
        for _ in range(2):
            assert _login(via_proxy, fresh_id("spray"), "wrong", **chain).status_code == 401
        _throttled(_login(via_proxy, fresh_id("spray"), "wrong", **chain), "address")
        # another client behind the same proxy is not held back
        other = {"X-Forwarded-For": fresh_address()}
        assert _login(via_proxy, fresh_id("spray"), "wrong", **other).status_code == 401
    assert _address_row(settings, client) == (0, 1, True)
    assert _address_row(settings, forged) is None
    assert _address_row(settings, proxy) is None


def test_ipv6_clients_are_counted_per_64_prefix(settings):
    backoff = settings.model_copy(update={"login_address_max_failures": 2})
    app = create_app(backoff)
    prefix = f"2001:db8:{next(_addresses):x}:1"
    for host in ("::1", "::2"):
        with _client(app, prefix + host) as one:
            assert _login(one, fresh_id("spray"), "wrong").status_code == 401
    with _client(app, prefix + "::3") as third:
        _throttled(_login(third, fresh_id("spray"), "wrong"), "address")
    assert _address_row(settings, prefix + "::/64") is not None


def test_failures_are_shared_across_api_processes_and_a_reset_gives_the_budget_back(
    strict, settings, login
):
    """Two app instances (own pools, nothing shared but the database) count together."""
    username = _user(settings)
    address = fresh_address()
    with _client(create_app(strict), address) as one, _client(create_app(strict), address) as two:
        assert _login(one, username, "wrong").status_code == 401
        assert _login(two, username, "wrong").status_code == 401
        assert _login(one, username, "wrong").status_code == 401
        _throttled(_login(two, username), "name")
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
        assert row is not None
        admin = login("admin", ["*"])
        with _client(create_app(strict)) as desk:
            reset = desk.post(
                f"/api/v1/users/{row[0]}/password", json={"password": PASSWORD}, headers=admin
            )
        assert reset.status_code == 204
        # `two` may repeat the refusal it just had from memory for a moment (RefusalCache)
        time.sleep(RefusalCache().ttl_s)
        assert _login(two, username).status_code == 200


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


def test_password_change_revokes_every_earlier_token(settings):
    username = _user(settings, "tracer", ("north",))
    with _client(create_app(settings)) as api:
        first, second = _bearer(_login(api, username)), _bearer(_login(api, username))
        url = "/api/v1/auth/password"
        wrong_old = api.post(url, json={"old": "nope-nope-1", "new": "fresh-pass-2"}, headers=first)
        assert wrong_old.status_code == 403
        short = api.post(url, json={"old": PASSWORD, "new": "short"}, headers=first)
        assert short.status_code == 422
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


def test_wrong_old_passwords_are_throttled_like_logins(settings):
    """A stolen session cannot be used to guess the password (and then change it)."""
    tight = settings.model_copy(update={"login_address_max_failures": 3})
    username = _user(settings)
    with _client(create_app(tight)) as thief:
        token = _bearer(_login(thief, username))
        url = "/api/v1/auth/password"
        for _ in range(3):
            guess = thief.post(url, json={"old": "guess-guess", "new": "x" * 12}, headers=token)
            assert guess.status_code == 403
        refused = thief.post(url, json={"old": PASSWORD, "new": "y" * 12}, headers=token)
        _throttled(refused, "address")


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
