"""Liveness and readiness of the processes that serve no HTTP (tagwatch/probes.py): a real
`tagwatch ingest` answers both; a writer stuck in a batch fails /healthz; a worker waiting out a
database that is away is alive but not ready; a dispatcher whose delivery thread died fails
/healthz. The probe port is attacked as a client would: other methods and paths, a malformed
request line, and a connection that sends nothing while others probe."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tagwatch.probes import Heartbeat, ProbeServer
from tests.conftest import IngestProcess
from tests.support import fresh_id, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str]]:
    try:
        response = httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError as error:  # closed unanswered (all 16 slots busy), refused
        return 0, {"transport": type(error).__name__}
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"raw": response.text}


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ the server alone


@pytest.fixture
def probe_server() -> Iterator[tuple[ProbeServer, dict[str, str | None]]]:
    state: dict[str, str | None] = {"live": None, "ready": "loading the catalogue"}

    def ready() -> str | None:
        if state["ready"] == "raise":
            raise RuntimeError("a bug in a check")
        return state["ready"]

    server = ProbeServer("127.0.0.1", 0, lambda: state["live"], ready).start()
    yield server, state
    server.close()


def test_the_probe_server_answers_and_refuses_like_a_service(probe_server) -> None:
    server, state = probe_server
    assert _get(server.port, "/healthz") == (200, {"status": "ok"})
    assert _get(server.port, "/readyz") == (
        503,
        {"status": "failing", "reason": "loading the catalogue"},
    )
    state["ready"] = None
    assert _get(server.port, "/readyz?verbose=1") == (200, {"status": "ok"})
    state["ready"] = "raise"  # a broken check is a failing probe, never a 500
    assert _get(server.port, "/readyz") == (
        503,
        {"status": "failing", "reason": "check failed: RuntimeError"},
    )
    assert _get(server.port, "/metrics")[0] == 404
    assert _raw(server.port, b"GET /../healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
        status, body = _get(server.port, "/healthz", method)
        assert (status, body.get("code")) == (405, 405), (method, body)
    # A TLS hello or any other garbage: http.server answers a request line it cannot read
    # as HTTP/0.9 (a body, no status line), and the body says 400.
    assert b'"code": 400' in _raw(server.port, b"\x16\x03\x01garbage\r\n\r\n")
    assert _raw(server.port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.0 414"
    )
    head = _raw(server.port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and head.endswith(b"\r\n\r\n")


def _threads_named(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_silent_and_trickling_clients_are_capped_and_cut_off(probe_server) -> None:
    """40 connections that send nothing hold at most 16 handler threads, and only until the
    5 s deadline; a client trickling a byte a second is cut off at that deadline too."""
    server, _ = probe_server
    before = threading.active_count()
    trickle = socket.create_connection(("127.0.0.1", server.port))  # first: it has a slot
    time.sleep(0.2)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= 16
        started = time.monotonic()
        closed_at = None
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 20:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                closed_at = time.monotonic() - started
                break
            trickle.settimeout(1.0)
            try:
                if trickle.recv(1) == b"":
                    closed_at = time.monotonic() - started
                    break
            except TimeoutError:
                pass
        assert closed_at is not None and 4.0 < closed_at < 8.0, closed_at
        assert wait_for(lambda: _get(server.port, "/healthz")[0] == 200, 5)
    finally:
        for s in [*idle, trickle]:
            s.close()


def test_a_heartbeat_fails_once_its_loop_stops_moving() -> None:
    beat = Heartbeat("writer", stall_s=0.2)
    assert beat.problem() is None
    time.sleep(0.3)
    assert (beat.problem() or "").startswith("writer: no progress for")
    beat.beat()
    assert beat.problem() is None


# ------------------------------------------------------------------ ingest


def test_a_real_ingest_worker_is_live_and_ready(service_env, tmp_path: Path) -> None:
    port = _free_port()
    process = IngestProcess(
        {**service_env, "TAGWATCH_PROBE_PORT": str(port)}, fresh_id("probe"), tmp_path
    )
    process.start_and_wait()
    try:
        assert wait_for(lambda: _get(port, "/readyz")[0] == 200, 20), _get(port, "/readyz")
        assert _get(port, "/healthz") == (200, {"status": "ok"})
    finally:
        process.end()


def _service(settings, **update):
    from tagwatch.ingest.service import IngestService

    changed = {"alerts_enabled": False, "probe_port": 0, "probe_stall_s": 1.0, **update}
    changed["ingest_client_id"] = fresh_id("tagwatch-probe")
    return IngestService(settings.model_copy(update=changed))


def _run(service) -> threading.Thread:
    """The worker in a thread; a start ended by the stop request (the database never came)
    raises the database's error, which is the expected end here."""
    import psycopg

    def run() -> None:
        try:
            service.run()
        except psycopg.OperationalError:
            if not service.stop_requested.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_writer_stuck_in_a_batch_fails_healthz(settings, monkeypatch) -> None:
    import psycopg

    from tagwatch.ingest.service import IngestService

    service = _service(settings)
    stuck = threading.Event()
    release = threading.Event()

    def write(self, batch, decoded):  # a transaction that never comes back (a lock, a bug)
        stuck.set()
        release.wait(30)
        raise psycopg.OperationalError("stopped")  # what step() takes as "stopping"

    monkeypatch.setattr(IngestService, "_write", write)
    server = service.start_probes()
    assert server is not None
    runner = _run(service)
    try:
        assert wait_for(lambda: _get(server.port, "/readyz")[0] == 200, 20), _get(
            server.port, "/readyz"
        )
        assert _get(server.port, "/healthz")[0] == 200
        # Any message reaches the writer: the worker's own drain marker is published on connect.
        assert stuck.wait(20)
        assert wait_for(lambda: _get(server.port, "/healthz")[0] == 503, 5)
        body = _get(server.port, "/healthz")[1]
        assert body["reason"].startswith("writer: no progress for"), body
    finally:
        service.stop_requested.set()
        release.set()
        runner.join(20)
    from tests.conftest import forget_session

    forget_session(service.settings.mqtt_url, service.settings.ingest_client_id)


def test_a_writer_waiting_out_a_database_outage_is_live_but_not_ready(
    settings, monkeypatch
) -> None:
    """The database goes away under a running worker (every batch's write fails as a dropped
    connection does): the writer retries for longer than the stall time, which is progress for
    /healthz, and /readyz says why it is not ready; the database back, it is ready again."""
    import psycopg

    from tagwatch.ingest import service as service_module

    # the stall time above the retry's longest wait (3 s), as 120 s is in service
    service = _service(settings, probe_stall_s=4.0)
    server = service.start_probes()
    assert server is not None
    runner = _run(service)
    away = threading.Event()
    real_write = service_module.write_batch

    def write_batch(*args, **kwargs):
        if away.is_set():
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(service_module, "write_batch", write_batch)
    try:
        assert wait_for(lambda: _get(server.port, "/readyz")[0] == 200, 20)
        away.set()
        # the worker's drain marker goes round again on each publish; any message will do
        client = service._client
        client.publish(service._barrier_topic, b"probe-test", qos=1)
        assert wait_for(
            lambda: _get(server.port, "/readyz")[1].get("reason") == "database: OperationalError",
            10,
        ), _get(server.port, "/readyz")
        time.sleep(5.0)  # longer than the stall time, all of it retrying
        assert _get(server.port, "/healthz") == (200, {"status": "ok"})
        away.clear()
        assert wait_for(lambda: _get(server.port, "/readyz")[0] == 200, 10)
    finally:
        service.stop_requested.set()
        runner.join(20)
    assert not runner.is_alive()
    from tests.conftest import forget_session

    forget_session(service.settings.mqtt_url, service.settings.ingest_client_id)


def test_a_worker_starting_without_its_database_is_alive_but_not_ready(settings) -> None:
    dead = f"postgresql://ingest:x@127.0.0.1:{_free_port()}/tagwatch?connect_timeout=1"
    service = _service(settings, database_url=dead, ingest_database_url=dead)
    server = service.start_probes()
    assert server is not None
    runner = _run(service)
    try:
        assert wait_for(
            lambda: _get(server.port, "/readyz")[1].get("reason") == "database: OperationalError",
            10,
        ), _get(server.port, "/readyz")
        time.sleep(1.5)  # longer than the stall time: starting is judged by /readyz alone
        assert _get(server.port, "/healthz") == (200, {"status": "ok"})
    finally:
        service.stop_requested.set()
        runner.join(20)
    assert not runner.is_alive()


# ------------------------------------------------------------------ the dispatcher


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dispatcher_whose_delivery_thread_died_fails_healthz(settings, monkeypatch) -> None:
    from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig

    config = dataclasses.replace(
        DispatcherConfig.from_settings(settings),
        mqtt_client_id=fresh_id("dispatch-probe"),
        poll_interval_s=0.2,
        workers=2,
    )
    dispatcher = Dispatcher(settings.model_copy(update={"probe_port": 0}), config)
    server = dispatcher.start_probes()
    assert server is not None
    stop = threading.Event()
    runner = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: _get(server.port, "/readyz")[0] == 200, 20), _get(
            server.port, "/readyz"
        )
        assert _get(server.port, "/healthz") == (200, {"status": "ok"})

        def die(conn):  # what no `except Exception` catches: the thread ends
            raise SystemExit("a delivery thread's end")

        monkeypatch.setattr(dispatcher, "dispatch_once", die)
        dispatcher.wake.set()
        assert wait_for(lambda: _get(server.port, "/healthz")[0] == 503, 10)
        assert "thread not running" in _get(server.port, "/healthz")[1]["reason"]
    finally:
        stop.set()
        runner.join(30)
