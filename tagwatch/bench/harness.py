"""What the benchmarks and the test suite share: a real webhook receiver and a process runner.

**WebhookReceiver**: http.server in a thread on a free port. It records every request it reads
(body, headers, time), can answer 500 to the first N requests, can be slow (it records the request
before sleeping, so a sender killed meanwhile has sent without seeing the answer), can be taken
down (the port closes: connection refused) and brought back on the same port, and counts the
requests it is still answering.

It listens on loopback over plain http, which the dispatcher refuses outside development unless
the allow-list names it: dispatchers in tests run with ``allowing_loopback(settings)`` (or
``TAGWATCH_WEBHOOK_ALLOW_HOSTS=127.0.0.1`` in a child's environment). Given the subscription's
secret it checks every signature on arrival as a real receiver would: a request that fails is
answered 401 and counted (`bad_signatures`), which `tagwatch bench alerts` reports.

**Child**: a `python -m ...` subprocess with its output in a log file, waited on by a line of
that log and stopped with SIGTERM (then SIGKILL), as the benchmarks run `tagwatch ingest` and
`tagwatch dispatch`.

**private_services**: a benchmark's own PostgreSQL and Mosquitto (`services.up`), migrated, in a
temporary directory removed afterwards, or in a directory the caller names and keeps.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from tagwatch import services
from tagwatch.alerts.signing import (
    NOTIFICATION_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from tagwatch.settings import Settings
from tagwatch.store.devices import add_assignment, register_device
from tagwatch.store.migrate import migrate
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.zones import ZoneDraft, create_zone

LOOPBACK_ALLOW = "127.0.0.1"


def allowing_loopback(settings: Settings) -> Settings:
    """The test settings with this receiver's address on the webhook allow-list."""
    return settings.model_copy(update={"webhook_allow_hosts": LOOPBACK_ALLOW})


@contextmanager
def private_services(
    directory: Path | None, prefix: str, echo: Callable[[str], object] | None = None
) -> Iterator[tuple[Path, dict[str, str]]]:
    """PostgreSQL and Mosquitto on private ports, the schema migrated: their directory and
    environment (`ServiceState.env`). Without ``directory`` they run in a temporary one (named
    ``prefix``...), stopped and removed afterwards; a named ``directory`` is kept, running."""
    base = directory or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if echo is not None:
            echo(f"starting private services in {base} ...")
        env = services.up(base).env()
        migrate(env["TAGWATCH_DATABASE_URL"])
        yield base, env
    finally:
        if directory is None:
            services.down(base)
            shutil.rmtree(base, ignore_errors=True)


def add_fenced_subjects(
    conn: psycopg.Connection,
    region: tuple[str, str],
    placed: Sequence[tuple[str, float, float]],
    *,
    interval_s: int,
    zone_radius_m: float,
    zone_name: str,
) -> list[int]:
    """Per (device id, lon, lat): the device, a subject of the same name holding it since an
    hour ago, and an exclusion circle of ``zone_radius_m`` at that point, in one transaction:
    the subjects that benchmarks and chaos runs walk into and out of their zones. Returns the
    subject ids in ``placed``'s order."""
    since = datetime.now(UTC) - timedelta(hours=1)
    subject_ids = []
    with conn.transaction():
        ensure_region(conn, *region)
        for index, (device_id, lon, lat) in enumerate(placed):
            register_device(conn, device_id, "tag", None, interval_s)
            subject_id = add_subject(
                conn,
                name=device_id,
                case_ref=device_id,
                region_id=region[0],
                timezone="Africa/Johannesburg",
            )
            add_assignment(conn, device_id, subject_id, "offender", since, None)
            create_zone(
                conn,
                ZoneDraft(
                    name=f"{zone_name} {index}",
                    kind="exclusion",
                    geometry={"type": "Point", "coordinates": [lon, lat]},
                    radius_m=zone_radius_m,
                    subject_id=subject_id,
                ),
            )
            subject_ids.append(subject_id)
    return subject_ids


def cpu_ticks() -> tuple[int, int] | None:
    """The machine's (busy, total) CPU ticks since boot, over all cores (Linux /proc/stat; None
    elsewhere). Two readings give how busy the machine was between them: a latency measured on
    a machine with no idle CPU left is queueing, not the code path."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


def busy_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float:
    """The share of the machine's CPU time that was busy between two cpu_ticks (NaN unknown)."""
    if start is None or end is None or end[1] <= start[1]:
        return float("nan")
    return (end[0] - start[0]) / (end[1] - start[1])


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def notification_id(self) -> str | None:
        return self.headers.get(NOTIFICATION_ID_HEADER)

    @property
    def timestamp(self) -> str | None:
        return self.headers.get(TIMESTAMP_HEADER)

    def signed_by(self, secret: str) -> bool:
        """Verified as the receiver would have at arrival: signature, timestamp, window."""
        return verify_signature(
            secret, self.body, self.headers.get(SIGNATURE_HEADER), self.timestamp, now=self.at
        )


class WebhookReceiver:
    def __init__(
        self, *, fail_first: int = 0, delay_s: float = 0.0, secret: str | None = None
    ) -> None:
        self.port = services.free_port()
        self.secret = secret
        self.bad_signatures = 0
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.received: list[Received] = []
        self.in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # -- lifecycle

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                forged = receiver.secret is not None and not verify_signature(
                    receiver.secret,
                    body,
                    self.headers.get(SIGNATURE_HEADER),
                    self.headers.get(TIMESTAMP_HEADER),
                    now=arrived,
                )
                with receiver._lock:
                    fail = not forged and receiver.fail_first > 0
                    if fail:
                        receiver.fail_first -= 1
                    status = 401 if forged else 500 if fail else 200
                    receiver.bad_signatures += forged
                    receiver.received.append(
                        Received(arrived, self.path, dict(self.headers), body, status)
                    )
                    receiver.in_flight += 1
                try:
                    if receiver.delay_s:
                        time.sleep(receiver.delay_s)
                    answer = b'{"ok": false}' if status != 200 else b'{"ok": true}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender went away (killed) before the answer
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: senders now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what arrived

    def ok(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == 200]

    def ids(self) -> list[str]:
        """Notification ids of every request answered (or being answered) with 200."""
        return [r.notification_id or "" for r in self.ok()]

    def unique_ids(self) -> set[str]:
        """What a receiver deduplicating on the notification id keeps."""
        return set(self.ids())

    def count(self) -> int:
        with self._lock:
            return len(self.received)


class Child:
    """A `python -m ...` subprocess with the services' environment and its output in a log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *args], env=env, stdout=self._log, stderr=self._log
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                msg = f"{self.name} did not log {text!r} in time:\n{self.log()[-3000:]}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
