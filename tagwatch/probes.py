"""Liveness and readiness over HTTP for the processes that serve no HTTP of their own.

The API answers ``/healthz`` and ``/readyz`` itself. Ingest workers and the dispatcher serve no
HTTP, so without this an orchestrator could restart them only when the process exits: a writer
stuck in a transaction, or a dispatcher whose delivery thread died, would stay "running" and
do nothing while fixes waited at the broker and alerts went undelivered. With
``TAGWATCH_PROBE_PORT`` set, each starts this small server:

* ``/healthz`` is 200 while every loop the process depends on has shown progress within its
  stall time (a `Heartbeat`) and its threads live, 503 with the reason otherwise. Waiting out a
  database outage counts as progress (the retry waits beat): a restart would not bring the
  database back, and a restarted ingest worker reloads its catalogue.
* ``/readyz`` is 200 when the process is doing its work (ingest: catalogue loaded, subscribed,
  its last database attempt succeeded; the dispatcher: its database answers), 503 with the
  reason otherwise.

The answers carry no data, only a status and a reason naming a stage, so the port needs no
credentials. It listens on 127.0.0.1 unless ``TAGWATCH_PROBE_HOST`` says otherwise (0.0.0.0 in a
pod, where the kubelet probes the pod's address). Another path is a 404, another method a 405;
a check that raises is a 503 naming the error's type, never a 500. At most 16 connections are
served at once (more are closed unanswered) and each gets 5 s for its whole request, so a client
that sends nothing, or trickles bytes, or sends the largest headers http.server reads (about
6.5 MB), holds at most 16 threads and about 100 MB for 5 s. Whoever can reach the port can still
keep those 16 slots busy and so fail the kubelet's probes: in a pod no NetworkPolicy admits
anything but the node's own traffic to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tagwatch.settings import Settings

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None when fine, else why not
PATHS = ("/healthz", "/readyz")
REQUEST_TIMEOUT_S = 5.0  # the whole request, not each read: a trickling client is cut off
MAX_CONNECTIONS = 16  # at once; more are closed unanswered


class Heartbeat:
    """When a loop last showed progress; a problem once that is longer ago than ``stall_s``."""

    def __init__(self, name: str, stall_s: float) -> None:
        self.name = name
        self.stall_s = stall_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def problem(self) -> str | None:
        age = time.monotonic() - self._last
        if age <= self.stall_s:
            return None
        return f"{self.name}: no progress for {age:.0f} s (limit {self.stall_s:.0f} s)"


def thread_problem(name: str, thread: threading.Thread | None) -> str | None:
    """A problem when a thread the process depends on has ended (or never started)."""
    if thread is None or not thread.is_alive():
        return f"{name}: thread not running"
    return None


def first_problem(checks: Iterable[Check]) -> str | None:
    for check in checks:
        problem = check()
        if problem is not None:
            return problem
    return None


def _answer(check: Check) -> tuple[int, dict[str, str]]:
    try:
        problem = check()
    except Exception as exc:  # a broken check is a failing probe, not a crashed one
        log.exception("probe check failed")
        problem = f"check failed: {type(exc).__name__}"
    if problem is None:
        return 200, {"status": "ok"}
    return 503, {"status": "failing", "reason": problem}


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once and a deadline on each."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed unanswered
            return
        with self._lock:
            self._deadlines[request] = time.monotonic() + REQUEST_TIMEOUT_S
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            if self._deadlines.pop(request, None) is None:
                return
        self._slots.release()

    def cut_late(self) -> None:
        """Shut the connections past their deadline; their threads then end on the next read."""
        now = time.monotonic()
        with self._lock:
            late = [request for request, deadline in self._deadlines.items() if deadline < now]
        for request in late:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up or was cut off: not worth a traceback on stderr per connection
        log.debug("probe connection from %s ended early", client_address[0], exc_info=True)


class ProbeServer:
    """``/healthz`` (``live``) and ``/readyz`` (``ready``) on ``host:port``, in a daemon thread.
    Port 0 takes a free port (``port`` tells which)."""

    def __init__(self, host: str, port: int, live: Check, ready: Check) -> None:
        checks = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S  # each read; the server cuts the whole request at 5 s
            server_version = "tagwatch-probe"
            sys_version = ""
            # http.server's own errors (a malformed request, another method) as JSON too; it
            # escapes the message for HTML, which leaves no quote to break the JSON.
            error_content_type = "application/json"
            error_message_format = '{"status": "error", "code": %(code)d, "reason": "%(message)s"}'

            def _reply(self, status: int, body: dict[str, str], *, head: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _probe(self, *, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                check = checks.get(path)
                if check is None:
                    self._reply(404, {"status": "not found", "reason": "GET /healthz or /readyz"})
                    return
                status, body = _answer(check)
                self._reply(status, body, head=head)

            def do_GET(self) -> None:
                self._probe(head=False)

            def do_HEAD(self) -> None:
                self._probe(head=True)

            def send_error(
                self, code: int, message: str | None = None, explain: str | None = None
            ) -> None:
                # Any other method is "not implemented" (501) to http.server: here it is a
                # client's error, 405. Malformed requests keep their 4xx.
                if code == HTTPStatus.NOT_IMPLEMENTED:
                    code, message = HTTPStatus.METHOD_NOT_ALLOWED, "GET or HEAD only"
                super().send_error(code, message, explain)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("probe %s: " + format, self.client_address[0], *args)

        self._server = _Server((host, port), Handler)
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()

    @classmethod
    def for_settings(cls, settings: Settings, live: Check, ready: Check) -> ProbeServer | None:
        """Started on ``probe_host:probe_port`` when ``TAGWATCH_PROBE_PORT`` is set, else None."""
        if settings.probe_port is None:
            return None
        return cls(settings.probe_host, settings.probe_port, live, ready).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ProbeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )
        self._thread.start()
        self._watchdog = threading.Thread(
            target=self._cut_late, name="probes-deadline", daemon=True
        )
        self._watchdog.start()
        log.info("probes: /healthz and /readyz on port %d", self.port)
        return self

    def _cut_late(self) -> None:
        while not self._closing.wait(0.5):
            self._server.cut_late()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        if self._watchdog is not None:
            self._watchdog.join(5)
        self._server.server_close()


__all__ = ["Check", "Heartbeat", "ProbeServer", "first_problem", "thread_problem"]
