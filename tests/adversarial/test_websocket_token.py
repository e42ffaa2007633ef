"""Attack: the alert WebSocket's token in the URL, and unauthenticated sockets held open.

A token in a query string (``/api/v1/alerts/stream?token=...``) is written to the access log of
every proxy and load balancer on the way, where anyone who reads logs can replay it. The feed
takes the token only as its first message: a connection that carries one in its URL is closed
with 1008 before anything is sent, even when the token is valid and a first message follows.

An attacker who opens sockets and never authenticates holds a connection and a server task
each: the feed closes them after a few seconds (``AUTH_TIMEOUT_S``).

Against a real ``tagwatch api`` (uvicorn) with a raw WebSocket client, as an attacker would.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tagwatch.api.routes.stream import AUTH_TIMEOUT_S
from tagwatch.api.security import hash_password
from tests.console.harness import console_server  # noqa: F401 - the real API server fixture
from tests.support import fresh_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PASSWORD = "ws-attack-pass-word-1"
IDLE_SOCKETS = 20


@pytest.fixture(scope="module")
def victim_token(settings, console_server) -> str:  # noqa: F811
    """An operator's valid access token, as a proxy log would have it."""
    username = fresh_id("ws-operator")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password(PASSWORD), "operator", ["*"]),
        )
    answer = httpx.post(
        f"{console_server.url}/api/v1/auth/token",
        data={"username": username, "password": PASSWORD},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def ws_url(server_url: str, query: str = "") -> str:
    return server_url.replace("http://", "ws://", 1) + "/api/v1/alerts/stream" + query


def closed_how(ws: ClientConnection, timeout: float) -> tuple[list[Any], int | None, str]:
    """What the server sent before closing, and its close code and reason."""
    received: list[Any] = []
    try:
        while True:
            received.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as closed:
        frame = closed.rcvd
        return received, frame.code if frame else None, frame.reason if frame else ""
    except TimeoutError:
        return received, None, "still open"


def test_a_valid_token_in_the_query_string_is_refused(console_server, victim_token):  # noqa: F811
    url = ws_url(console_server.url, f"?token={victim_token}")
    # the token only in the URL
    with connect(url, open_timeout=10) as ws:
        received, code, reason = closed_how(ws, 10)
    # ... and in the URL and as the first message: the URL alone disqualifies it
    with connect(url, open_timeout=10) as ws:
        with contextlib.suppress(ConnectionClosed):  # the server may have closed already
            ws.send(json.dumps({"token": victim_token}))
        received_too, code_too, _ = closed_how(ws, 10)
    print(
        f"token in the URL: closed with {code} ({reason!r}), {len(received)} messages received;"
        f" with a first message too: closed with {code_too}, {len(received_too)} received"
    )
    assert (code, code_too) == (1008, 1008)
    assert received == received_too == []  # no "ready", no event
    assert "first message" in reason

    # the platform keeps working: the same token as the first message is served
    with connect(ws_url(console_server.url), open_timeout=10) as ws:
        ws.send(json.dumps({"token": victim_token}))
        ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "ready"


def test_sockets_that_never_authenticate_are_closed_within_seconds(
    console_server,  # noqa: F811
    victim_token,
):
    """Twenty sockets open and silent: each is closed with 1008 about AUTH_TIMEOUT_S after
    it opened, and the feed keeps serving an honest client meanwhile."""
    lifetimes: list[float] = []
    codes: list[int | None] = []
    lock = threading.Lock()

    def hold() -> None:
        with connect(ws_url(console_server.url), open_timeout=10) as ws:
            opened = time.monotonic()
            received, code, _ = closed_how(ws, AUTH_TIMEOUT_S + 20)
            with lock:
                lifetimes.append(time.monotonic() - opened)
                codes.append(code if not received else -1)

    threads = [threading.Thread(target=hold) for _ in range(IDLE_SOCKETS)]
    for thread in threads:
        thread.start()
    # an honest operator connects while the attacker's sockets are held
    time.sleep(1)
    started = time.monotonic()
    with connect(ws_url(console_server.url), open_timeout=10) as ws:
        ws.send(json.dumps({"token": victim_token}))
        ready = json.loads(ws.recv(timeout=10))
    honest_s = time.monotonic() - started
    for thread in threads:
        thread.join(AUTH_TIMEOUT_S + 30)
    median = statistics.median(lifetimes)
    print(
        f"{IDLE_SOCKETS} silent sockets: closed with {sorted(set(codes))} after"
        f" {min(lifetimes):.1f}-{max(lifetimes):.1f} s (median {median:.1f} s,"
        f" limit {AUTH_TIMEOUT_S:.0f} s); an honest client was ready in {honest_s * 1000:.0f} ms"
    )
    assert ready["type"] == "ready"
    assert codes == [1008] * IDLE_SOCKETS
    # closed by the server's limit, not earlier, and not much later on a loaded machine
    assert min(lifetimes) >= AUTH_TIMEOUT_S - 0.5
    assert max(lifetimes) <= AUTH_TIMEOUT_S + 5
    assert honest_s < 5
