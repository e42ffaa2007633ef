"""Attack: a login flood against one user name, to guess the password and to stall the platform.

The attacker fires 200 wrong logins for one administrator's name at once, from several loopback
addresses (so that the name's budget, not one address's, is what stops them), every request
with a forged ``X-Forwarded-For``. Meanwhile a probe measures ``/healthz`` and the live alert
WebSocket (pings on an authenticated feed, and fresh connections authenticating with their first
message up to ``ready``): argon2 runs in a bounded thread pool and logins use a bounded share of
the database pool, so both keep answering. Exactly the name's budget of guesses is verified;
every other one is answered 429 with Retry-After without its password being checked.

Then the real administrator logs in at once from an address they used before (familiar
addresses are not held back by the name's budget), and from a new address after the window: the
flood cannot keep them out. Last, an attacker who forges a fresh ``X-Forwarded-For`` for every
guess is still counted on its real address.

Against a real uvicorn server (a subprocess on a loopback port), with raw HTTP and WebSocket
clients bound to their own loopback source addresses, as an attacker would.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from tagwatch.api.security import hash_password
from tests.support import ApiServer, api_server, fresh_id

# serial: its latency bounds (p99 of /healthz, WebSocket pings and new feeds under a login flood)
# need the machine to itself, not the other test worker beside it
pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(300)]

PASSWORD = "admin-pass-word-1"
NAME_BUDGET = 5  # TAGWATCH_LOGIN_MAX_FAILURES of the server below
ADDRESS_BUDGET = 10
WINDOW_S = 20.0
FLOOD = 200
ATTACKERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
DESK, NEWCOMER, PROBE, SPOOFER = "127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"
P99_LIMIT_S = 0.100
NEW_FEED_P99_LIMIT_S = 1.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def server(service_env: dict[str, str], tmp_path_factory) -> Iterator[ApiServer]:
    """The real API. No proxy headers: the socket peer is the client."""
    with api_server(
        service_env,
        tmp_path_factory.mktemp("login-flood"),
        TAGWATCH_LOGIN_MAX_FAILURES=str(NAME_BUDGET),
        TAGWATCH_LOGIN_ADDRESS_MAX_FAILURES=str(ADDRESS_BUDGET),
        TAGWATCH_LOGIN_FAILURE_WINDOW_S=str(WINDOW_S),
    ) as running:
        yield running


def _user(settings, role: str) -> str:
    username = fresh_id(f"flood-{role}")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s)",
            (username, hash_password(PASSWORD), role, ["*"]),
        )
    return username


def _login(url: str, source: str, username: str, password: str = PASSWORD) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(
            f"{url}/api/v1/auth/token", data={"username": username, "password": password}
        )


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@dataclass
class Probe:
    """Measures the platform's answers from another address while the flood runs. It runs in a
    process of its own, so that the attacker's client does not slow the measurement down."""

    url: str
    token: str
    healthz: list[float] = field(default_factory=list)
    ws_ping: list[float] = field(default_factory=list)
    ws_ready: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/api/v1/alerts/stream"

    def _health_loop(self, stop: threading.Event) -> None:
        transport = httpx.HTTPTransport(local_address=PROBE)
        with httpx.Client(transport=transport, timeout=5) as client:
            while not stop.is_set():
                start = time.perf_counter()
                response = client.get(f"{self.url}/healthz")
                self.healthz.append(time.perf_counter() - start)
                if response.status_code != 200:
                    self.errors.append(f"healthz {response.status_code}")
                time.sleep(0.01)

    def _ping_loop(self, stop: threading.Event) -> None:
        """Pings on a feed that authenticated before the flood (its first message)."""
        with connect(self.ws_url(), open_timeout=10) as ws:
            ws.send(json.dumps({"token": self.token}))
            ready = json.loads(ws.recv(timeout=10))
            if ready.get("type") != "ready":
                self.errors.append(f"feed answered {ready}")
            while not stop.is_set():
                start = time.perf_counter()
                if not ws.ping().wait(5):
                    self.errors.append("no pong within 5 s")
                self.ws_ping.append(time.perf_counter() - start)
                time.sleep(0.01)

    def _connect_loop(self, stop: threading.Event) -> None:
        """New feeds: connect, send the token, wait for 'ready'."""
        while not stop.is_set():
            start = time.perf_counter()
            try:
                with connect(self.ws_url(), open_timeout=5) as ws:
                    ws.send(json.dumps({"token": self.token}))
                    ready = json.loads(ws.recv(timeout=5))
                    self.ws_ready.append(time.perf_counter() - start)
                    if ready.get("type") != "ready":
                        self.errors.append(f"feed answered {ready}")
            except Exception as exc:
                self.errors.append(f"feed: {exc!r}")
            time.sleep(0.02)

    def measure(self, started: Any, stop: Any) -> dict[str, list[Any]]:
        local = threading.Event()
        loops = (self._health_loop, self._ping_loop, self._connect_loop)
        threads = [threading.Thread(target=f, args=(local,), daemon=True) for f in loops]
        for thread in threads:
            thread.start()
        started.set()
        stop.wait(120)
        local.set()
        for thread in threads:
            thread.join(10)
        return {
            "healthz": self.healthz,
            "ws_ping": self.ws_ping,
            "ws_ready": self.ws_ready,
            "errors": self.errors,
        }


def _probe_process(url: str, token: str, started: Any, stop: Any, results: Any) -> None:
    results.put(Probe(url, token).measure(started, stop))


def measured(url: str, token: str, during: Callable[[], T]) -> tuple[T, dict[str, list[Any]]]:
    """Run ``during`` while a probe process measures; its result and the measurements."""
    context = multiprocessing.get_context("spawn")
    started, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=_probe_process, args=(url, token, started, stop, results))
    process.start()
    try:
        assert started.wait(60), "the probe did not start"
        time.sleep(0.3)  # a baseline before the flood
        outcome = during()
        time.sleep(0.3)
    finally:
        stop.set()
    figures = results.get(timeout=60)
    process.join(30)
    return outcome, figures


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def _guess(port: int, source: str, username: str, password: str, forged: str) -> Answer:
    """One login over a raw socket, as a flooding script would send it (cheap for the
    attacker's CPU, which here is the server's too)."""
    form = urlencode({"username": username, "password": password}).encode()
    request = (
        "POST /api/v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Forwarded-For: {forged}\r\nContent-Length: {len(form)}\r\n\r\n"
    ).encode() + form
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


async def _flood(url: str, username: str) -> list[Answer]:
    port = int(url.rsplit(":", 1)[1])
    guesses = [
        _guess(
            port, ATTACKERS[i % len(ATTACKERS)], username, f"guess-{i:04d}",
            forged=f"10.{i // 250}.{i % 250}.1",
        )
        for i in range(FLOOD)
    ]  # fmt: skip
    return await asyncio.gather(*guesses)


def test_a_login_flood_gets_exactly_the_budget_and_the_platform_keeps_answering(server, settings):
    admin = _user(settings, "admin")
    operator = _user(settings, "operator")
    # the administrator's usual desk: logged in from there before
    assert _login(server.url, DESK, admin).status_code == 200
    feed_token = _login(server.url, PROBE, operator).json()["access_token"]

    started = time.perf_counter()
    answers, probe = measured(
        server.url, feed_token, lambda: asyncio.run(_flood(server.url, admin))
    )
    flood_s = time.perf_counter() - started

    statuses = Counter(r.status_code for r in answers)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT failures FROM login_throttle WHERE username = %s", (admin,)
        ).fetchone()
    counted = int(row[0]) if row else 0
    refused = [r for r in answers if r.status_code == 429]
    healthz_p99 = _p99(probe["healthz"])
    ping_p99 = _p99(probe["ws_ping"])
    ready_p99 = _p99(probe["ws_ready"])
    print(
        f"\nlogin flood: {FLOOD} concurrent wrong logins for one name from {len(ATTACKERS)}"
        f" addresses in {flood_s:.2f} s: statuses {dict(statuses)}, attempts counted {counted}"
        f" (budget {NAME_BUDGET})\n"
        f"  /healthz p99 {healthz_p99 * 1000:.1f} ms over {len(probe['healthz'])} requests;"
        f" alert WebSocket ping p99 {ping_p99 * 1000:.1f} ms over {len(probe['ws_ping'])} pings;"
        f" new feed to 'ready' p99 {ready_p99 * 1000:.1f} ms over {len(probe['ws_ready'])} connects"
    )
    assert not probe["errors"], probe["errors"][:5]
    assert statuses == {401: NAME_BUDGET, 429: FLOOD - NAME_BUDGET}, statuses
    assert counted == NAME_BUDGET
    for response in refused:
        detail = response.json()["detail"]
        assert detail["reason"] == "too_many_failed_logins_name"
        assert 1 <= int(response.headers["retry-after"]) <= WINDOW_S
    assert healthz_p99 < P99_LIMIT_S, healthz_p99
    assert ping_p99 < P99_LIMIT_S, ping_p99
    # A new feed also pays a TCP and WebSocket handshake and three database queries on a machine
    # whose two cores the attacker's 200 connections and five argon2 verifications (140 ms each)
    # share, so its p99 is measured over a few dozen connects and moves with the machine (260 ms
    # once in CI). Its bound is looser: what it guards against is a flood draining the database
    # pool, which would hold every new feed until the flood is over (seconds). Argon2 on the event
    # loop is the ping bound's failure: each verification would stall every pong by 140 ms.
    assert ready_p99 < NEW_FEED_P99_LIMIT_S, ready_p99

    # The flood cannot keep the administrator out: at their desk at once ...
    assert _login(server.url, DESK, admin).status_code == 200
    # ... and from a new address once the name's window is over (Retry-After says when).
    waiting = _login(server.url, NEWCOMER, admin)
    assert waiting.status_code == 429, waiting.text
    retry_after = int(waiting.headers["Retry-After"])
    assert retry_after <= WINDOW_S
    time.sleep(retry_after + 0.5)
    late = _login(server.url, NEWCOMER, admin)
    print(f"  a new address waited {retry_after} s (Retry-After), then: {late.status_code}")
    assert late.status_code == 200, late.text


def test_forged_x_forwarded_for_does_not_reset_the_address_count(server, settings):
    """A password spray (a new name each time) with a fresh forged header each time: the
    real address is what counts, so the budget runs out all the same."""
    answers = []
    for i in range(ADDRESS_BUDGET + 3):
        transport = httpx.HTTPTransport(local_address=SPOOFER)
        with httpx.Client(transport=transport, timeout=30) as client:
            answers.append(
                client.post(
                    f"{server.url}/api/v1/auth/token",
                    data={"username": fresh_id("spray"), "password": "Winter2024!"},
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}", "X-Real-IP": "10.9.9.9"},
                )
            )
    statuses = [r.status_code for r in answers]
    with psycopg.connect(settings.database_url) as conn:
        forged = conn.execute(
            "SELECT count(*) FROM login_address_throttle WHERE address LIKE '203.0.113.%'"
        ).fetchone()
    print(f"\nforged X-Forwarded-For: statuses {statuses}; rows under forged addresses {forged}")
    assert statuses == [401] * ADDRESS_BUDGET + [429] * 3
    assert all(
        r.json()["detail"]["reason"] == "too_many_failed_logins_address"
        for r in answers[ADDRESS_BUDGET:]
    )
    assert forged == (0,)
