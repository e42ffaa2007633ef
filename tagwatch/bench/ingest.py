"""`tagwatch bench ingest`: fixes per second through the whole ingest path, beside the ceiling.

Each measurement drains a backlog that the broker holds for a persistent session (the fixes are
published first, while the consumer is away), so the publisher's speed does not enter the figure
and both consumers meet exactly the same stream:

* the ceiling: a bare paho subscriber that only counts messages (auto-acknowledged);
* ingest, one fix per message: broker → decode → COPY → commit → PUBACK;
* ingest, 50 fixes per message (store-and-forward uploads), same path;
* ingest with the alert engine on and off, one fix per message from ENGINE_DEVICES devices that
  each have a subject, an open assignment and the rule state of a subject tracked for a while (a
  full trail), registered in bulk as `simulators/load.py register` does, and a few global
  exclusion zones nowhere near them: the engine's own cost. The fixes are live (the newest a few
  seconds old) and come round-robin over the devices, so each batch evaluates ~2,000 subjects.
  These runs are drained by 1 and by 2 ingest worker *processes* (each its own interpreter, so
  two use both cores) with their own client ids on one shared subscription, as production scales
  ingest. Mosquitto queues a shared subscription's messages for its offline persistent members
  too, round-robin, so each worker's session is opened (and subscribed to the share) before the
  backlog is published, and both find half of it waiting when they start.

Each engine run has its own subjects; when it ends they are taken off the clock rules (they fall
silent then, and the next engine-on run's clock would judge them all, inside its timing).
After every ingest run the bench checks the database: as many rows as fixes published, each
(device, seq) once, and, with the engine on, no engine error counted or logged by any worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg

from tagwatch import services
from tagwatch.alerts.rules import TRAIL_FIXES, DeviceState, SubjectState
from tagwatch.alerts.state_codec import encode_state
from tagwatch.ingest import affinity
from tagwatch.ingest.service import IngestService, subscriptions
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.store.bench_ingest import (
    active_sessions,
    retire_clock,
    settle,
    stored_fixes,
    worker_counter,
)
from tagwatch.store.devices import assign_to_namesakes, ensure_devices, register_devices
from tagwatch.store.engine_repository import seed_rule_state
from tagwatch.store.migrate import analyze, migrate
from tagwatch.store.subjects import add_namesakes, ensure_region, ids_by_case_ref
from tagwatch.store.zones import ZoneDraft, create_zone, named_zones

DEVICES = 200
ENGINE_DEVICES = 20_000
ENGINE_REGION = "bench-ingest"
ENGINE_ZONES = 5


def _client(endpoint: MqttEndpoint, client_id: str, clean: bool = False) -> mqtt.Client:
    """MQTT 3.1.1, as ingest speaks it, so the ceiling and ingest share the same client path."""
    return new_client(endpoint, client_id, clean_session=clean)


def _open_session(endpoint: MqttEndpoint, client_id: str, group: str | None = None) -> None:
    """Create a persistent session with the ingest subscriptions (those of the shared ``group``
    when given), then leave: the broker queues what is published meanwhile for it."""
    client = _client(endpoint, client_id)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in subscriptions(group)])
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    if not subscribed.wait(10):
        msg = "benchmark session was not subscribed"
        raise RuntimeError(msg)
    client.disconnect()
    client.loop_stop()


def _close_session(endpoint: MqttEndpoint, client_id: str) -> None:
    client = _client(endpoint, client_id, clean=True)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def _publish(endpoint: MqttEndpoint, messages: list[tuple[str, bytes]]) -> float:
    client = _client(endpoint, f"tagwatch-bench-pub-{secrets.token_hex(3)}", clean=True)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    started = time.perf_counter()
    # Message ids are 16-bit: keep fewer than 65,535 publishes outstanding.
    for start in range(0, len(messages), 20_000):
        infos = [client.publish(t, p, qos=1) for t, p in messages[start : start + 20_000]]
        for info in infos:
            info.wait_for_publish(120)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def _messages(prefix: str, fixes: int, per_message: int) -> list[tuple[str, bytes]]:
    base = time.time() - 86_400
    per_device = fixes // DEVICES
    out = []
    for index in range(DEVICES):
        device_id = f"{prefix}-{index:03d}"
        batch: list[dict[str, object]] = []
        for seq in range(per_device):
            batch.append(
                {
                    "ts": base + seq * 15,
                    "lat": -33.9 + seq * 1e-5,
                    "lon": 18.4,
                    "acc": 7.5,
                    "seq": seq,
                    "spd": 1.3,
                    "batt": 80,
                }
            )
            if len(batch) == per_message:
                body = batch[0] if per_message == 1 else {"fixes": batch}
                out.append((f"em/v1/{device_id}/fix", json.dumps(body).encode()))
                batch = []
    return out


def _register(database_url: str, prefix: str) -> None:
    with psycopg.connect(database_url) as conn:
        ensure_devices(conn, [f"{prefix}-{i:03d}" for i in range(DEVICES)], "tag")


def _engine_messages(prefix: str, devices: int, fixes: int) -> list[tuple[str, bytes]]:
    """Live single fixes, round-robin over the devices (as live traffic arrives: every batch
    holds a different device per message), the newest a few seconds old."""
    per_device = max(1, fixes // devices)
    now = time.time()
    out = []
    for seq in range(per_device):
        ts = now - (per_device - seq) * 15
        for index in range(devices):
            body = {
                "ts": ts,
                "lat": -33.9 - (index % 100) * 1e-3,
                "lon": 18.4 + (index // 100) * 1e-3,
                "acc": 7.5,
                "seq": seq,
                "spd": 1.3,
                "batt": 80,
            }
            out.append((f"em/v1/{prefix}-{index:06d}/fix", json.dumps(body).encode()))
    return out


def _tracked_state(device_id: str, last: float) -> tuple[dict[str, Any], bytes]:
    """The rule state row of a subject tracked for a while (a full trail), last heard at
    ``last``: the document and the packed trail, as the engine writes them (a document with the
    trail inside is the pre-0008 form, which costs the engine 7x to read the first time)."""
    state = SubjectState(
        devices={
            device_id: DeviceState(
                expected_interval_s=60.0, last_msg=last, last_heard=last, last_fix=last
            )
        },
        watermark=last,
        trail=[
            (last - k * 60.0, 18.4 + k * 1.234567e-4, -33.9 - k * 7.654321e-5, 7.5)
            for k in range(TRAIL_FIXES - 1, -1, -1)
        ],
    )
    return encode_state(state)


def _register_subjects(database_url: str, prefix: str, devices: int) -> None:
    """Devices, one subject each with the rule state of a subject tracked for a while, and an
    open assignment, in bulk; then statistics, as a database that has held them a while has
    (fresh from COPY the planner would guess)."""
    ids = [f"{prefix}-{i:06d}" for i in range(devices)]
    last = time.time() - 120
    with psycopg.connect(database_url) as conn:
        ensure_region(conn, ENGINE_REGION, "Ingest benchmark")
        register_devices(conn, ids, "tag", 60)
        add_namesakes(conn, ids, ENGINE_REGION, "Africa/Johannesburg")
        assign_to_namesakes(conn, f"{prefix}-%", datetime.now(UTC) - timedelta(days=1))
        subject_ids = ids_by_case_ref(conn, f"{prefix}-%")
        seed_rule_state(
            conn, [(sid, *_tracked_state(ref, last)) for ref, sid in subject_ids.items()]
        )
        made = named_zones(conn, "bench-ingest zone %", include_deleted=True)
        for index in range(0 if made else ENGINE_ZONES):
            # global exclusion zones of the region, a few km from every fix
            create_zone(
                conn,
                ZoneDraft(
                    name=f"bench-ingest zone {index}",
                    kind="exclusion",
                    geometry={"type": "Point", "coordinates": [18.2, -33.7 - index * 0.01]},
                    radius_m=300,
                    region_id=ENGINE_REGION,
                ),
            )
    with psycopg.connect(database_url, autocommit=True) as conn:
        analyze(conn)


def measure_bare(
    endpoint: MqttEndpoint, publisher: MqttEndpoint, messages: list[tuple[str, bytes]]
) -> tuple[float, float]:
    """Messages a second a bare paho subscriber drains, and its CPU seconds a message (the
    bench's other threads wait meanwhile, so the process's CPU is the client's): what one
    process pays for the MQTT client alone, before any of ingest's work."""
    client_id = f"tagwatch-bench-bare-{secrets.token_hex(3)}"
    _open_session(endpoint, client_id)
    _publish(publisher, messages)
    received = 0
    done = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received >= len(messages):
            done.set()

    client = _client(endpoint, client_id)
    client.on_message = on_message
    started = time.perf_counter()
    cpu_at_start = time.process_time()
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_at_start
    client.disconnect()
    client.loop_stop()
    _close_session(endpoint, client_id)
    return received / elapsed, cpu / max(1, received)


def measure_ingest(
    settings: Settings, endpoint: MqttEndpoint, messages: list[tuple[str, bytes]], fixes: int
) -> tuple[float, float, str]:
    """One IngestService in a thread of this process: fixes/s, messages/s and its client id."""
    client_id = f"tagwatch-bench-ingest-{secrets.token_hex(3)}"
    _open_session(MqttEndpoint.parse(settings.mqtt_url), client_id)
    _publish(endpoint, messages)
    service = IngestService(settings.model_copy(update={"ingest_client_id": client_id}))
    runner = threading.Thread(target=service.run, name="bench-ingest")
    started = time.perf_counter()
    runner.start()
    deadline = started + 600
    while service.totals.fixes_stored < fixes and time.perf_counter() < deadline:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    service.stop_requested.set()
    runner.join(30)
    _close_session(MqttEndpoint.parse(settings.mqtt_url), client_id)
    return service.totals.fixes_stored / elapsed, len(messages) / elapsed, client_id


@dataclass(slots=True)
class Check:
    """What the database holds after a run: each fix once, and what the workers counted."""

    published: int
    rows: int
    distinct: int
    per_worker: dict[str, float] = field(default_factory=dict)  # fixes_stored_total each
    # batches each committed (from its batch-time counter, which commits a batch's time with the
    # next batch: one short)
    batches: dict[str, float] = field(default_factory=dict)
    engine_errors: int = 0  # alert_engine_errors_total, and engine failures in the logs
    retries: int = 0  # database errors a worker retried (a deadlock would show here)

    @property
    def ok(self) -> bool:
        return self.rows == self.distinct == self.published and not self.engine_errors

    def describe(self) -> str:
        split = " / ".join(f"{value:,.0f}" for value in self.per_worker.values())
        verdict = "yes" if self.ok else "NO"
        text = f"stored once: {verdict} ({self.rows:,} rows, {self.distinct:,} distinct"
        text += f" of {self.published:,}; per worker {split}; engine errors {self.engine_errors}"
        return text + (f"; database retries {self.retries})" if self.retries else ")")


def check_stored(
    database_url: str,
    prefix: str,
    published: int,
    workers: Sequence[str],
    logs: Sequence[Path] = (),
) -> Check:
    """Each published fix stored exactly once (rows = distinct (device, seq) = published), no
    engine error counted by the workers nor logged, and the database errors they retried."""
    with psycopg.connect(database_url) as conn:
        stored = stored_fixes(conn, f"{prefix}-")
        per_worker = worker_counter(conn, workers, "fixes_stored_total")
        batches = worker_counter(conn, workers, "ingest_batch_seconds_count")
        errors = worker_counter(conn, workers, "alert_engine_errors_total")
    text = "".join(path.read_text(errors="replace") for path in logs if path.exists())
    return Check(
        published=published,
        rows=stored.rows,
        distinct=stored.distinct,
        per_worker=per_worker,
        batches=batches,
        engine_errors=int(sum(errors.values())) + text.count("alert engine failed"),
        retries=text.count("database error"),
    )


def _cpu_seconds(pid: int, child_title: str | None = None) -> float:
    """CPU seconds (user + system) of a process, of the children it waited for and of its live
    children (Linux /proc; NaN elsewhere): the PostgreSQL server is its postmaster, its live
    backends and the backends that ended. With ``child_title``: only the live children whose
    command line starts with it (``postgres: <user> ``: that role's sessions)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _after_name((entry / "stat").read_text())
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name
        if int(entry.name) == pid and child_title is None:
            total += sum(int(v) for v in fields[11:15]) / tick
        elif int(fields[1]) == pid and (child_title is None or title.startswith(child_title)):
            total += _own_seconds(fields, tick)
    return total


def _after_name(stat: str) -> list[str]:
    """A /proc stat line's fields after the command name (which may hold spaces): state, ppid,
    ... (field 3 onwards)."""
    return stat.rsplit(")", 1)[1].split()


def _own_seconds(fields: list[str], tick: int) -> float:
    """utime + stime (fields 14 and 15 of stat, 11 and 12 of _after_name), in seconds."""
    return (int(fields[11]) + int(fields[12])) / tick


def _server_pids(base: Path, pg_data: str) -> dict[str, int]:
    """The private PostgreSQL's postmaster and Mosquitto, from their pid files."""
    found: dict[str, int] = {}
    for name, pid_file in (
        ("PostgreSQL", Path(pg_data) / "postmaster.pid"),
        ("Mosquitto", base / "mosquitto" / "mosquitto.pid"),
    ):
        try:
            found[name] = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return found


def _worker(
    settings: Settings,
    log_path: str,
    ready: Any,
    go: Any,
    stop: Any,
    stored: Any,
    cpu: Any,
) -> None:
    """One ingest worker in its own (spawned) process: built and imported before ``go``, so the
    timed part is what `tagwatch ingest` does from its start (database, device registry, broker)
    to the last commit. ``stored`` mirrors its fixes stored for the bench to poll; ``cpu`` gets
    the CPU seconds it used from the go to the stop."""
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    service = IngestService(settings)
    ready.set()
    go.wait(900)
    cpu_at_go, threads_at_go = time.process_time(), thread_cpu_seconds()
    runner = threading.Thread(target=service.run, name="ingest", daemon=True)
    runner.start()
    while not stop.wait(0.005) and runner.is_alive():
        stored.value = service.totals.fixes_stored
    cpu.value = time.process_time() - cpu_at_go
    threads = thread_cpu_seconds()
    since_go = {role: value - threads_at_go.get(role, 0.0) for role, value in threads.items()}
    Path(log_path).with_suffix(".threads.json").write_text(json.dumps(since_go))
    service.stop_requested.set()
    runner.join(30)
    stored.value = service.totals.fixes_stored


# What each of a worker's threads does, by the name it runs under: paho's network loop reads,
# parses and acknowledges packets (and hands each message to the decoder); the decoder turns
# payloads into fixes; the writer ("ingest", the thread running IngestService.run) copies them
# in, runs the alert engine and commits.
THREAD_ROLES = (
    ("paho-mqtt-client-", "MQTT client"),
    ("ingest-decode", "decode"),
    ("ingest", "write and engine"),
)


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of this process's live threads since each started, summed
    by role (THREAD_ROLES; "other" for the rest), from /proc/self/task (Linux; empty elsewhere),
    to the clock's tick (10 ms)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        seconds = _own_seconds(_after_name(stat), tick)
        role = next((r for prefix, r in THREAD_ROLES if thread.name.startswith(prefix)), "other")
        out[role] = out.get(role, 0.0) + seconds
    return out


class SessionSampler:
    """Samples, every ``every`` seconds in a thread, what ingest's PostgreSQL sessions are doing
    (pg_stat_activity: a wait event or CPU, and the statement), to see where the database's time
    goes in a run."""

    def __init__(self, database_url: str, user: str, every: float = 0.025) -> None:
        self.database_url = database_url
        self.user = user
        self.every = every
        self.samples = 0
        self.seen: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pg-sampler", daemon=True)

    def __enter__(self) -> SessionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                self.samples += 1
                self.seen.update(active_sessions(conn, self.user))

    def describe(self, top: int = 4) -> str:
        """Sessions active per sample, and the commonest (wait, statement) with their share."""
        if not self.samples:
            return "no samples"
        busy = sum(self.seen.values()) / self.samples
        parts = [
            f"{100 * n / self.samples:.0f}% {wait} {query!r}"
            for (wait, query), n in self.seen.most_common(top)
        ]
        return f"{busy:.2f} of ingest's sessions active per sample; " + "; ".join(parts)


@dataclass(slots=True)
class Drained:
    """A backlog drained by ingest worker processes, and the CPU it cost."""

    fixes_per_s: float
    msgs_per_s: float
    elapsed_s: float
    ids: list[str]  # the workers' client ids
    logs: list[Path]
    worker_cpu_s: list[float]
    thread_cpu_s: dict[str, float]  # the workers' CPU by thread role, summed (THREAD_ROLES)
    server_cpu_s: dict[str, float]  # PostgreSQL, Mosquitto: during the drain
    ingest_backends_cpu_s: float = float("nan")  # PostgreSQL's share: the workers' sessions
    sessions: str = ""  # what ingest's sessions were seen doing (SessionSampler.describe)

    def describe_cpu(self) -> str:
        workers = " + ".join(f"{value:.1f}" for value in self.worker_cpu_s)
        servers = []
        for name, value in self.server_cpu_s.items():
            text = f"{name} {value:.1f}"
            if name == "PostgreSQL":
                text += f" (ingest's sessions {self.ingest_backends_cpu_s:.1f})"
            servers.append(text)
        roles = ", ".join(f"{role} {value:.1f}" for role, value in self.thread_cpu_s.items())
        split = f" ({roles})" if roles else ""
        return f"CPU s: ingest {workers}{split}, {', '.join(servers)}; wall {self.elapsed_s:.1f} s"

    def micros_per_fix(self, fixes: int) -> dict[str, float]:
        """The workers' CPU per fix stored, in µs: in all and by thread role."""
        per = 1e6 / max(1, fixes)
        return {"all": sum(self.worker_cpu_s) * per} | {
            role: value * per for role, value in self.thread_cpu_s.items()
        }


def measure_workers(
    settings: Settings,
    endpoint: MqttEndpoint,
    messages: list[tuple[str, bytes]],
    fixes: int,
    workers: int,
    log_dir: Path,
    servers: dict[str, int] | None = None,
    *,
    pin: bool = False,
) -> Drained:
    """Drain a backlog with ``workers`` ingest processes on one shared subscription, timed from
    the go to the last fix committed; ``servers`` (name: pid) have their CPU time measured over
    the same span. ``pin``: worker k's threads on CPU k (TAGWATCH_INGEST_CPU, ingest/affinity.py).

    Every worker's persistent session is opened and subscribed to the share first; the broker
    then queues the backlog, round-robin, for the absent members."""
    ctx = multiprocessing.get_context("spawn")
    token = secrets.token_hex(3)
    group = f"bench-{token}"
    ids = [f"tagwatch-bench-ingest-{token}-{k}" for k in range(workers)]
    logs = [log_dir / f"{client_id}.log" for client_id in ids]
    broker = MqttEndpoint.parse(settings.mqtt_url)
    servers = servers or {}
    for client_id in ids:
        _open_session(broker, client_id, group)
    _publish(endpoint, messages)
    go, stop = ctx.Event(), ctx.Event()
    readies = [ctx.Event() for _ in ids]
    counts = [ctx.Value("q", 0, lock=False) for _ in ids]
    cpus = [ctx.Value("d", 0.0, lock=False) for _ in ids]
    processes = [
        ctx.Process(
            target=_worker,
            args=(
                settings.model_copy(
                    update={
                        "ingest_client_id": client_id,
                        "ingest_shared_group": group,
                        "ingest_cpu": k if pin else None,
                    }
                ),
                str(log),
                ready,
                go,
                stop,
                count,
                cpu,
            ),
            name=client_id,
            daemon=True,
        )
        for k, (client_id, log, ready, count, cpu) in enumerate(
            zip(ids, logs, readies, counts, cpus, strict=True)
        )
    ]
    try:
        for process in processes:
            process.start()
        for ready, process in zip(readies, processes, strict=True):
            if not ready.wait(120):
                msg = f"ingest worker {process.name} did not start (exit {process.exitcode})"
                raise RuntimeError(msg)
        server_cpu = {name: _cpu_seconds(pid) for name, pid in servers.items()}
        user = urlsplit(settings.database_url_for("ingest")).username or ""
        with SessionSampler(settings.database_url, user) as sampler:
            started = time.perf_counter()
            go.set()
            deadline = started + 600
            while sum(c.value for c in counts) < fixes and time.perf_counter() < deadline:
                if any(process.exitcode is not None for process in processes):
                    tail = "".join(log.read_text(errors="replace")[-2000:] for log in logs)
                    msg = f"an ingest worker ended before the backlog was drained:\n{tail}"
                    raise RuntimeError(msg)
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
        server_cpu = {name: _cpu_seconds(pid) - server_cpu[name] for name, pid in servers.items()}
        # the workers' sessions began after the go and are still open: all their CPU is the run's
        backends = (
            _cpu_seconds(servers["PostgreSQL"], f"postgres: {user} ")
            if "PostgreSQL" in servers
            else float("nan")
        )
    finally:
        stop.set()
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.kill()
                process.join(5)
        for client_id in ids:
            _close_session(broker, client_id)
    stored = sum(c.value for c in counts)
    return Drained(
        fixes_per_s=stored / elapsed,
        msgs_per_s=len(messages) / elapsed,
        elapsed_s=elapsed,
        ids=ids,
        logs=logs,
        worker_cpu_s=[c.value for c in cpus],
        thread_cpu_s=_summed_threads(logs),
        server_cpu_s=server_cpu,
        ingest_backends_cpu_s=backends,
        sessions=sampler.describe(),
    )


def _summed_threads(logs: Sequence[Path]) -> dict[str, float]:
    """The workers' thread CPU (what each wrote beside its log), summed by role."""
    out: dict[str, float] = {}
    for log in logs:
        path = log.with_suffix(".threads.json")
        if path.exists():
            for role, value in json.loads(path.read_text()).items():
                out[role] = out.get(role, 0.0) + float(value)
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def _worker_label(workers: int) -> str:
    return "1 worker " if workers == 1 else f"{workers} workers"


@contextlib.contextmanager
def _on_first_cpu(pin: bool) -> Iterator[None]:
    """With ``pin``, this process's threads (and those they start) on its first allowed CPU, as
    worker 0 is pinned, while the bare subscriber and the in-process ingest runs drain: the
    ceiling and ingest then meet the same scheduling. The mask is given back afterwards, since
    the worker processes started later take theirs from this process."""
    if not pin or not affinity.allowed_cpus():
        yield
        return
    before = set(affinity.allowed_cpus())
    affinity.pin_to_cpu(0)
    try:
        yield
    finally:
        affinity.set_process_cpus(before)


def _in_process_runs(
    settings: Settings,
    gateway: MqttEndpoint,
    bare_subscriber: MqttEndpoint,
    run: str,
    fixes: int,
    figures: dict[str, float],
    checked: Callable[[Check], str],
    echo: Callable[[str], object],
) -> None:
    """The ceiling (a bare subscriber) and ingest in a thread of this process: one fix per
    message, then 50."""
    single = _messages(f"bb-{run}", fixes, 1)
    bare, bare_cpu = measure_bare(bare_subscriber, gateway, single)
    figures["bare_msgs_per_s"], figures["bare_cpu_us_per_msg"] = bare, 1e6 * bare_cpu
    echo(
        f"  bare subscriber (ceiling)        {bare:>10,.0f} msg/s"
        f" ({1e6 * bare_cpu:.0f} µs of CPU a message: the MQTT client alone)"
    )

    _register(settings.database_url, f"bs-{run}")
    single = _messages(f"bs-{run}", fixes, 1)
    rate, _, client_id = measure_ingest(settings, gateway, single, fixes)
    flag = checked(check_stored(settings.database_url, f"bs-{run}", fixes, [client_id]))
    figures["ingest_single_fixes_per_s"] = rate
    figures["ingest_single_vs_bare"] = rate / figures["bare_msgs_per_s"]
    echo(
        f"  ingest, 1 fix per message        {rate:>10,.0f} fixes/s "
        f"({figures['ingest_single_vs_bare']:.2f} of the ceiling){flag}"
    )

    _register(settings.database_url, f"bm-{run}")
    batched = _messages(f"bm-{run}", fixes, 50)
    rate, msg_rate, client_id = measure_ingest(settings, gateway, batched, fixes)
    flag = checked(check_stored(settings.database_url, f"bm-{run}", fixes, [client_id]))
    figures["ingest_batch50_fixes_per_s"] = rate
    echo(f"  ingest, 50 fixes per message     {rate:>10,.0f} fixes/s ({msg_rate:,.0f} msg/s){flag}")


def run_benchmark(
    fixes: int = 100_000,
    directory: Path | None = None,
    echo: Callable[[str], object] = print,
    workers: Sequence[int] = (1, 2),
    pin: bool = False,
) -> dict[str, float]:
    fixes = max(DEVICES * 50, fixes - fixes % (DEVICES * 50))
    base = directory or Path(tempfile.mkdtemp(prefix="tagwatch-bench-"))
    echo(f"starting private services in {base} ...")
    state = services.up(base)
    env = state.env()
    log_dir = base / "bench-ingest-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    checks: list[Check] = []

    def checked(check: Check) -> str:
        checks.append(check)
        return "" if check.ok else f"  <- {check.describe()}"

    try:
        migrate(env["TAGWATCH_DATABASE_URL"])
        settings = Settings.for_services(env, environment="test")
        assert settings.mqtt_gateway_url, "services up provisions the gateway"
        gateway = MqttEndpoint.parse(settings.mqtt_gateway_url)
        bare_subscriber = MqttEndpoint.parse(settings.mqtt_url)
        run = secrets.token_hex(2)
        figures: dict[str, float] = {}
        servers = _server_pids(base, state.pg_data)

        echo(
            f"{fixes} fixes from {DEVICES} devices per run; backlog drained by each consumer"
            + (
                "; this process's threads kept on the first allowed CPU for these three"
                if pin
                else ""
            )
        )
        with _on_first_cpu(pin):
            _in_process_runs(settings, gateway, bare_subscriber, run, fixes, figures, checked, echo)

        engine_fixes = max(ENGINE_DEVICES, fixes - fixes % ENGINE_DEVICES)
        counts = sorted(set(workers))
        echo(
            f"{engine_fixes} single fixes from {ENGINE_DEVICES:,} devices with subjects and open"
            f" assignments, {ENGINE_ZONES} global zones; alert engine on vs off, drained by"
            f" {' and '.join(map(str, counts))} ingest worker process(es) on one shared"
            " subscription (each worker's session queued its share of the backlog)"
            + ("; worker k's threads kept on CPU k" if pin else "")
        )
        for count in counts:
            for label, enabled in (("on", True), ("off", False)):
                prefix = f"be{label}{count}-{run}"
                _register_subjects(settings.database_url, prefix, ENGINE_DEVICES)
                with psycopg.connect(settings.database_url, autocommit=True) as conn:
                    settle(conn)
                messages = _engine_messages(prefix, ENGINE_DEVICES, engine_fixes)
                drained = measure_workers(
                    settings.model_copy(update={"alerts_enabled": enabled}),
                    gateway,
                    messages,
                    engine_fixes,
                    count,
                    log_dir,
                    servers,
                    pin=pin,
                )
                check = check_stored(
                    settings.database_url, prefix, engine_fixes, drained.ids, drained.logs
                )
                with psycopg.connect(settings.database_url) as conn:
                    retire_clock(conn, f"{prefix}-")
                flag = checked(check)
                split = " / ".join(f"{v:,.0f}" for v in check.per_worker.values())
                split += " in ~" + " / ".join(f"{v + 1:,.0f}" for v in check.batches.values())
                split += " batches"
                rate = drained.fixes_per_s
                figures[f"ingest_engine_{label}_{count}w_fixes_per_s"] = rate
                echo(
                    f"  ingest, 1 fix/msg, engine {label:<3}, {_worker_label(count)}"
                    f" {rate:>10,.0f} fixes/s (per worker {split}){flag}"
                )
                echo(f"      {drained.describe_cpu()}")
                micros = drained.micros_per_fix(engine_fixes)
                for role, value in micros.items():
                    key = role.replace(" ", "_")
                    figures[f"ingest_engine_{label}_{count}w_cpu_us_{key}"] = value
                echo(
                    "      µs of CPU a fix: "
                    + ", ".join(f"{role} {value:.0f}" for role, value in micros.items())
                )
                echo(f"      PostgreSQL: {drained.sessions}")
        for count in counts:
            on = figures[f"ingest_engine_on_{count}w_fixes_per_s"]
            off = figures[f"ingest_engine_off_{count}w_fixes_per_s"]
            figures[f"engine_on_vs_off_{count}w"] = on / off
            echo(f"  engine on / engine off, {_worker_label(count)}     {on / off:>10.2f}")
        if 1 in counts:
            # the names of the rows before there were worker processes: one worker
            figures["ingest_engine_on_fixes_per_s"] = figures["ingest_engine_on_1w_fixes_per_s"]
            figures["ingest_engine_off_fixes_per_s"] = figures["ingest_engine_off_1w_fixes_per_s"]
            figures["engine_on_vs_off"] = figures["engine_on_vs_off_1w"]
            for count in counts[1:]:
                for label in ("on", "off"):
                    ratio = (
                        figures[f"ingest_engine_{label}_{count}w_fixes_per_s"]
                        / figures[f"ingest_engine_{label}_1w_fixes_per_s"]
                    )
                    figures[f"engine_{label}_{count}w_vs_1w"] = ratio
                    echo(f"  {count} workers / 1 worker, engine {label:<3}     {ratio:>10.2f}")
        ok = all(check.ok for check in checks)
        figures["stored_once"] = float(ok)
        retries = sum(check.retries for check in checks)
        echo(
            f"stored once: {'yes' if ok else 'NO'} ({len(checks)} ingest runs: rows = distinct"
            " (device, seq) = fixes published; engine errors"
            f" {sum(check.engine_errors for check in checks)}; database retries {retries})"
        )
        echo("targets: >= 15,000 fixes/s single (>= 0.8 of the ceiling); >= 100,000 batched")
        return figures
    finally:
        if directory is None:
            services.down(base)
            shutil.rmtree(base, ignore_errors=True)
