"""`tagwatch bench alerts`: publish → alert committed and publish → webhook delivered, under load.

Everything runs for real, on private services in a temporary directory: Mosquitto, PostgreSQL,
`tagwatch ingest` and `tagwatch dispatch` as subprocesses (each with its own interpreter), a
webhook receiver (`bench.harness`, the test suite's: a threaded HTTP server in this process,
subscribed to every type and region, checking every signature), and the background load in a child
process of its own (`simulators.load`: ``rate x interval`` devices through gateway connections,
each reporting every ``interval`` seconds with no zones, so their fixes take the whole ingest and
alert-engine path but raise nothing). The database is ANALYZEd once they are registered, as a
database holding them for a while would be (fresh from COPY, the planner seq-scans the assignments
every batch).

**Probes.** A probe is a subject holding one device with its own exclusion zone (a 200 m circle)
and no history. An episode publishes ``entry_fixes`` (4) fixes at the zone's centre, 1 s apart,
``acc`` 5 m: deep inside by far more than twice the accuracy, so each is confident evidence and
the *fourth* completes the dwell (4 fixes; 150 s cannot be reached in 3 s). That fix is the
proving fix: the alert's ``opened_at`` is its time, which the benchmark checks for every probe.

**Latency** is measured from the wall time the proving fix was handed to the MQTT client:

* to *alert committed*: a watcher polls the alerts table every 10 ms on its own connection; the
  time the first query that sees the row was sent bounds the commit from above (a statement sees
  what was committed before it started), so the figure is late by at most a poll interval plus
  one query. The proving fix is stored in the same transaction; the watcher times it too.
* to *alert transaction began*: the row's ``raised_at`` (``now()`` of the ingest transaction).
* to *webhook delivered*: the receiver's clock when the dispatcher's signed POST arrived.

**Baselines, in the same run**: the same probes with no background load (before the load
starts), and publish → committed for the background fixes themselves (one in ``sample``, timed by
the load generator's own watcher).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg

from tagwatch.alerts.thresholds import DEFAULTS
from tagwatch.bench.harness import (
    Child,
    WebhookReceiver,
    add_fenced_subjects,
    busy_share,
    cpu_ticks,
    private_services,
)
from tagwatch.settings import Settings
from tagwatch.simulators.load import gateway_client, release
from tagwatch.store.alerts import alert_times
from tagwatch.store.fixes import devices_with_seq, stored_like
from tagwatch.store.migrate import analyze
from tagwatch.store.webhooks import add_plain, deactivate_named

REGION = "bench"
CENTRE = (18.60, -33.70)  # lon, lat: away from the load's area (it has no zones anyway)
ZONE_RADIUS_M = 200.0
PROBE_ACC_M = 5.0
PROBE_FIXES = DEFAULTS.entry_fixes  # the fourth confident fix inside completes the dwell
PROBE_SPACING_S = 1.0  # between a probe's fixes (--quick: 0.2 s; the dwell counts fixes)
POLL_S = 0.01
ALERT_TYPE = "exclusion_zone_entry"
TARGET_ALERT_P99_S = 0.5
TARGET_WEBHOOK_P99_S = 1.0
LOAD_WARMUP_S = 3.0  # the load runs this long before the first loaded probe (--quick: 1 s)
LOAD_TAIL_S = 5.0  # and this long after the last proving fix (--quick: 1 s)
# A drain that stalls this long is reported as not stored. 5 s was too short to tell a stall
# from a loss: one 2-worker run on a busy machine gave up with 98.7 % stored.
DRAIN_PATIENCE_S = 30.0
DRAIN_POLL_S = 0.5


# ---------------------------------------------------------------------------------- probes


@dataclass
class Probe:
    index: int
    device_id: str
    subject_id: int
    lon: float
    lat: float
    proving_ts: float | None = None  # the proving fix's own time (its `ts`)
    published_at: float | None = None  # wall time it was handed to the MQTT client
    fix_seen_at: float | None = None
    alert_seen_at: float | None = None
    alert_id: int | None = None
    opened_at: float | None = None
    raised_at: float | None = None
    webhook_at: float | None = None
    alerts: int = 0  # alerts of ALERT_TYPE the subject has once the run has settled: one


def _create_probes(conn: psycopg.Connection, prefix: str, count: int) -> list[Probe]:
    """Devices, subjects, assignments and one exclusion zone each; nothing published yet."""
    placed = [
        (f"{prefix}-{index:04d}", CENTRE[0] + 0.01 * (index % 50), CENTRE[1] - 0.01 * (index // 50))
        for index in range(count)
    ]
    subject_ids = add_fenced_subjects(
        conn,
        (REGION, "Alert benchmark"),
        placed,
        interval_s=60,
        zone_radius_m=ZONE_RADIUS_M,
        zone_name="bench zone",
    )
    return [
        Probe(index, device_id, subject_id, lon, lat)
        for index, ((device_id, lon, lat), subject_id) in enumerate(
            zip(placed, subject_ids, strict=True)
        )
    ]


class ProbeWatcher(threading.Thread):
    """Polls for the alert and the proving fix of every probe whose proving fix is out."""

    def __init__(self, database_url: str) -> None:
        super().__init__(name="bench-alert-watcher", daemon=True)
        self.database_url = database_url
        self.lock = threading.Lock()
        self.pending: dict[int, Probe] = {}  # by subject id
        self.stop = threading.Event()

    def expect(self, probe: Probe) -> None:
        with self.lock:
            self.pending[probe.subject_id] = probe

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stop.is_set():
                with self.lock:
                    waiting = list(self.pending.values())
                if waiting:
                    self._poll(conn, waiting)
                self.stop.wait(POLL_S)

    def _poll(self, conn: psycopg.Connection, waiting: list[Probe]) -> None:
        # A row visible to a statement was committed before the statement's snapshot, taken as
        # it starts: the time just before sending it bounds the commit from above.
        alerts_asked = time.time()
        alerts = alert_times(
            conn, [p.subject_id for p in waiting if p.alert_seen_at is None], ALERT_TYPE
        )
        fixes_asked = time.time()
        fixes = devices_with_seq(
            conn, [p.device_id for p in waiting if p.fix_seen_at is None], PROBE_FIXES
        )
        by_device = {p.device_id: p for p in waiting}
        with self.lock:
            for alert in alerts:
                probe = self.pending[alert.subject_id]
                probe.alert_seen_at = alerts_asked
                probe.alert_id, probe.opened_at = alert.id, alert.opened_at
                probe.raised_at = alert.raised_at
            for device_id in fixes:
                by_device[device_id].fix_seen_at = fixes_asked
            for probe in waiting:
                if probe.alert_seen_at is not None and probe.fix_seen_at is not None:
                    self.pending.pop(probe.subject_id, None)


def _fix_body(probe: Probe, seq: int, ts: float) -> bytes:
    return (
        f'{{"ts":{ts:.3f},"lat":{probe.lat:.6f},"lon":{probe.lon:.6f},"acc":{PROBE_ACC_M:g},'
        f'"seq":{seq},"batt":80,"src":"gps"}}'
    ).encode()


def _run_probes(
    client: mqtt.Client,
    watcher: ProbeWatcher,
    receiver: WebhookReceiver,
    probes: list[Probe],
    start: float,
    duration: float,
    spacing: float,
    timeout: float = 60.0,
) -> None:
    """Episodes evenly spread over `duration` from wall time `start`; wait for their alerts and
    webhooks (at most `timeout` after the last proving fix)."""
    spread = duration / max(1, len(probes))
    events = sorted(
        (start + i * spread + k * spacing, k + 1, i)
        for i in range(len(probes))
        for k in range(PROBE_FIXES)
    )
    for due, seq, i in events:
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        probe = probes[i]
        now = time.time()
        ts = round(now, 3)
        if seq == PROBE_FIXES:
            probe.proving_ts, probe.published_at = ts, now
        client.publish(f"em/v1/{probe.device_id}/fix", _fix_body(probe, seq, ts), qos=1)
        if seq == PROBE_FIXES:
            watcher.expect(probe)
    deadline = time.time() + timeout
    while time.time() < deadline:
        _collect(receiver, probes)
        with watcher.lock:
            done = all(p.alert_seen_at is not None for p in probes)
        if done and all(p.webhook_at is not None for p in probes):
            return
        time.sleep(0.05)


# ---------------------------------------------------------------------------------- webhooks


def _collect(receiver: WebhookReceiver, probes: list[Probe]) -> None:
    """Each probe's webhook time: the first signed 'opened' notification of its subject."""
    opened: dict[int, float] = {}
    for request in receiver.ok():
        note = request.json
        if note.get("event") == "opened" and note.get("type") == ALERT_TYPE:
            opened.setdefault(int(note["subject_id"]), request.at)
    for probe in probes:
        if probe.webhook_at is None:
            probe.webhook_at = opened.get(probe.subject_id)


# ---------------------------------------------------------------------------------- processes


class LoadChild:
    """The background load in its own process (its own GIL): `python -m tagwatch.bench.alerts`.

    It registers its devices first (so ingest, started afterwards, knows them all), says so, then
    publishes when told to, and prints its report as JSON."""

    def __init__(self, env: dict[str, str], prefix: str, devices: int, interval: float) -> None:
        self.prefix = prefix
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.echo: Callable[[str], object] = print
        args = [prefix, str(devices), str(interval)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tagwatch.bench.alerts", *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
            else:
                self.echo(f"  load: {line.rstrip()}")

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    msg = f"the load generator exited ({self.process.returncode}) without answering"
                    raise RuntimeError(msg) from None
        msg = f"the load generator did not answer in {timeout:g} s"
        raise RuntimeError(msg)

    def go(self, duration: float, clients: int, sample: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{duration} {clients} {sample}\n")
        self.process.stdin.flush()
        return self.next(30)

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # a child still waiting for `go` exits
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _load_child(argv: list[str]) -> int:
    """The load generator's side of `LoadChild` (uses `simulators.load` as `tagwatch load` does)."""
    import random  # noqa: PLC0415

    from tagwatch.simulators.load import LoadReport, publish_steady, register  # noqa: PLC0415

    prefix, devices, interval = argv[0], int(argv[1]), float(argv[2])
    settings = Settings.for_services(dict(os.environ), environment="test")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with psycopg.connect(settings.database_url) as conn:
        started = time.perf_counter()
        ids = register(conn, prefix, devices, interval)
        print(json.dumps({"registered": len(ids), "seconds": time.perf_counter() - started}))
        sys.stdout.flush()
        command = sys.stdin.readline().split()
        if not command:
            return 0
        duration, clients, sample = float(command[0]), int(command[1]), int(command[2])
        report = LoadReport(devices, interval, duration)
        print(json.dumps({"publishing": time.time() + 0.5}))  # `publish_steady` starts at +0.5 s
        sys.stdout.flush()
        error = None
        try:
            publish_steady(settings, ids, report, clients, sample, random.Random(), print, stop)
        except (ValueError, RuntimeError) as exc:  # after the publishing loop: the counts stand
            error = f"{type(exc).__name__}: {exc}"
        figures = {
            "error": error,
            "published": report.published,
            "publish_s": report.publish_s,
            "sampled": len(report.latencies_s),
            "unseen": report.unseen,
            "latencies": _latencies(report.latencies_s),
        }
        print(json.dumps(figures))
        sys.stdout.flush()
    return 0


@contextmanager
def _platform(
    env: dict[str, str], log_dir: Path, workers: int = 1, *, pin: bool = False
) -> Iterator[None]:
    """``workers`` `tagwatch ingest` processes and `tagwatch dispatch`, started together and
    stopped together. More than one worker share one subscription group, as production scales
    ingest: the broker hands each message to one of them."""
    token = secrets.token_hex(3)
    child_env = {
        **os.environ,
        **env,
        "TAGWATCH_ENVIRONMENT": "test",
        "TAGWATCH_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the receiver is on loopback, over http
    }
    child_env.pop("TAGWATCH_ENV_FILE", None)
    if workers > 1:
        child_env["TAGWATCH_INGEST_SHARED_GROUP"] = f"bench-{token}"
    children: list[Child] = []
    try:
        ingests = []
        for k in range(workers):
            worker_env = child_env | {
                "TAGWATCH_INGEST_CLIENT_ID": f"tagwatch-bench-ingest-{token}-{k}"
            }
            if pin:
                worker_env["TAGWATCH_INGEST_CPU"] = str(k)
            name = "ingest" if workers == 1 else f"ingest-{k}"
            ingests.append(
                Child(name, ["tagwatch", "ingest", "--worker", name], worker_env, log_dir)
            )
            children.append(ingests[-1])
        dispatcher = Child("dispatch", ["tagwatch", "dispatch"], child_env, log_dir)
        children.append(dispatcher)
        for ingest in ingests:
            ingest.wait_for_log("subscribed to", 120)
        dispatcher.wait_for_log("dispatcher started", 60)
        dispatcher.wait_for_log("dispatcher connected to the broker", 30)
        yield
    finally:
        for child in children:
            child.stop()


# ---------------------------------------------------------------------------------- figures


STATS = ("p50", "p95", "p99", "max")


def _latencies(values: list[float]) -> dict[str, float]:
    if not values:
        return dict.fromkeys(STATS, float("nan"))
    a = np.array(values)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def _count_alerts(database_url: str, probes: list[Probe]) -> None:
    """How many alerts each probe's subject has, after the run has settled."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = alert_times(conn, [p.subject_id for p in probes], ALERT_TYPE)
    per_subject = Counter(row.subject_id for row in rows)
    for probe in probes:
        probe.alerts = per_subject[probe.subject_id]


def _phase_figures(name: str, probes: list[Probe]) -> dict[str, float]:
    out: dict[str, float] = {
        f"{name}_probes": len(probes),
        f"{name}_alerted": sum(p.alert_seen_at is not None for p in probes),
        f"{name}_delivered": sum(p.webhook_at is not None for p in probes),
        # an episode raised twice (two workers each opening it) is as wrong as one never raised
        f"{name}_duplicated": sum(max(0, p.alerts - 1) for p in probes),
        # the alert must be opened by the proving fix itself (its time), not another one
        f"{name}_wrong_fix": sum(
            p.opened_at is not None
            and p.proving_ts is not None
            and abs(p.opened_at - p.proving_ts) > 0.002
            for p in probes
        ),
    }
    measures = {
        "fix": [p.fix_seen_at - p.published_at for p in probes if p.fix_seen_at and p.published_at],
        "alert": [
            p.alert_seen_at - p.published_at for p in probes if p.alert_seen_at and p.published_at
        ],
        "raised": [p.raised_at - p.published_at for p in probes if p.raised_at and p.published_at],
        "webhook": [
            p.webhook_at - p.published_at for p in probes if p.webhook_at and p.published_at
        ],
    }
    for measure, values in measures.items():
        out[f"{name}_{measure}_n"] = len(values)
        for stat, value in _latencies(values).items():
            out[f"{name}_{measure}_{stat}_ms"] = round(1000 * value, 1)
    return out


def _table(figures: dict[str, float], rate: float) -> list[str]:
    rows = [
        ("idle", "fix", "idle: publish → proving fix committed", None),
        ("idle", "raised", "idle: publish → alert transaction began", None),
        ("idle", "alert", "idle: publish → alert committed", None),
        ("idle", "webhook", "idle: publish → webhook delivered", None),
        ("loaded", "fix", f"{rate:,.0f}/s: publish → proving fix committed", None),
        ("loaded", "raised", f"{rate:,.0f}/s: publish → alert transaction began", None),
        ("loaded", "alert", f"{rate:,.0f}/s: publish → alert committed", TARGET_ALERT_P99_S),
        ("loaded", "webhook", f"{rate:,.0f}/s: publish → webhook delivered", TARGET_WEBHOOK_P99_S),
        ("background", "fix", f"{rate:,.0f}/s: background fix committed (sampled)", None),
    ]
    width = max(len(r[2]) for r in rows)
    out = [
        f"{'latency, ms':<{width}} {'n':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  p99 target"
    ]
    for phase, measure, label, target in rows:
        n = int(figures.get(f"{phase}_{measure}_n", 0))
        cells = " ".join(
            f"{figures.get(f'{phase}_{measure}_{s}_ms', float('nan')):>7.0f}" for s in STATS
        )
        verdict = ""
        if target is not None:
            ok = figures.get(f"{phase}_{measure}_p99_ms", float("inf")) <= 1000 * target
            verdict = f"≤ {1000 * target:.0f} {'met' if ok else 'MISSED'}"
        out.append(f"{label:<{width}} {n:>5} {cells}  {verdict}")
    return out


# ---------------------------------------------------------------------------------- benchmark


def run_benchmark(
    rate: float = 5000.0,
    probes: int = 200,
    duration: float = 60.0,
    *,
    interval: float = 60.0,
    baseline_probes: int | None = None,
    clients: int = 4,  # gateway connections: each holds < 65,536 unacknowledged publishes
    sample: int = 50,
    quick: bool = False,
    workers: int = 1,
    directory: Path | None = None,
    echo: Callable[[str], object] = print,
    pin: bool = False,
) -> dict[str, float]:
    """Run it all and print the table; returns the figures (latencies in ms). ``pin``: worker
    k's threads on CPU k (TAGWATCH_INGEST_CPU)."""
    spacing, warm, tail = PROBE_SPACING_S, LOAD_WARMUP_S, LOAD_TAIL_S
    if quick:
        rate, probes, duration, interval = min(rate, 200.0), min(probes, 10), 3.0, 10.0
        baseline_probes = 5 if baseline_probes is None else baseline_probes
        spacing, warm, tail = 0.2, 1.0, 1.0
    baseline_probes = max(5, probes // 4) if baseline_probes is None else baseline_probes
    baseline_duration = max(2.0, duration * baseline_probes / max(1, probes))
    devices = max(1, round(rate * interval))
    with private_services(directory, "tagwatch-bench-alerts-", echo) as (base, env):
        log_dir = base / "bench-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        load: LoadChild | None = None
        receiver: WebhookReceiver | None = None
        watcher: ProbeWatcher | None = None
        client: mqtt.Client | None = None
        run = secrets.token_hex(2)
        try:
            settings = Settings.for_services(env, environment="test")
            secret = secrets.token_urlsafe(24)
            receiver = WebhookReceiver(secret=secret).start()
            with psycopg.connect(settings.database_url) as conn:
                add_plain(conn, f"bench-{run}", receiver.url, secret)
                conn.commit()
                all_probes = _create_probes(conn, f"bprobe-{run}", 1 + baseline_probes + probes)
            warmup = all_probes[:1]
            idle = all_probes[1 : 1 + baseline_probes]
            loaded = all_probes[1 + baseline_probes :]
            load_env = {**os.environ, **env}
            load_env.pop("TAGWATCH_ENV_FILE", None)
            load = LoadChild(load_env, f"bload-{run}", devices, interval)
            load.echo = echo
            registered = load.next(600)
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                # Statistics, as a database that has held these devices for a while has them: fresh
                # from COPY, the planner would seq-scan the assignments for every batch.
                analyze(conn)
            echo(
                f"registered {registered['registered']:,} background devices (one fix each"
                f" every {interval:g} s) in {registered['seconds']:.1f} s; {len(all_probes)}"
                " probe subjects"
            )
            with _platform(env, log_dir, workers, pin=pin):
                watcher = ProbeWatcher(settings.database_url)
                watcher.start()
                client = gateway_client(settings, "bench-probe")
                _run_probes(
                    client, watcher, receiver, warmup, time.time(), 0.0, spacing, timeout=120
                )
                if warmup[0].webhook_at is None:
                    msg = f"the warm-up probe got no alert or no webhook; logs in {log_dir}"
                    raise RuntimeError(msg)
                echo(
                    f"idle: {len(idle)} probe episodes over {baseline_duration:g} s, no other load"
                )
                start = time.time() + 0.2
                _run_probes(client, watcher, receiver, idle, start, baseline_duration, spacing)
                load_s = warm + duration + PROBE_FIXES * spacing + tail
                ticks_at_load = cpu_ticks()
                started = float(load.go(load_s, clients, sample)["publishing"])
                echo(
                    f"loaded: background {rate:,.0f} fixes/s from {devices:,} devices for"
                    f" {load_s:g} s; {len(loaded)} probe episodes over {duration:g} s from"
                    f" +{warm:g} s"
                )
                _run_probes(client, watcher, receiver, loaded, started + warm, duration, spacing)
                report = load.next(load_s + 120)
                loaded_busy = busy_share(ticks_at_load, cpu_ticks())
                stored, stored_span = _stored(
                    settings.database_url, load.prefix, report["published"]
                )
                _settle(watcher, receiver, all_probes, 30.0)
                _count_alerts(settings.database_url, all_probes)
                if directory is not None:  # services that outlive the run: once ingest has drained,
                    with psycopg.connect(settings.database_url) as conn:  # stop monitoring the load
                        release(conn, load.prefix)
            figures = _phase_figures("idle", idle) | _phase_figures("loaded", loaded)
            figures.update(
                {
                    "ingest_workers": workers,
                    "ingest_pinned": float(pin),
                    # how busy the whole machine was from the load's start to its end
                    "loaded_machine_busy": round(loaded_busy, 3),
                    "background_devices": devices,
                    "background_target_per_s": rate,
                    "background_published": report["published"],
                    "background_published_per_s": round(
                        report["published"] / report["publish_s"], 1
                    ),
                    "background_stored": stored,
                    "background_stored_per_s": round(stored / stored_span, 1)
                    if stored_span
                    else 0.0,
                    "background_fix_n": report["sampled"],
                    "background_unseen": report["unseen"],
                    "background_failed": 0.0 if report["error"] is None else 1.0,
                    "bad_signatures": receiver.bad_signatures,
                    "webhook_requests": receiver.count(),
                    **{
                        f"background_fix_{s}_ms": round(1000 * v, 1)
                        for s, v in report["latencies"].items()
                    },
                }
            )
            _print(figures, rate, echo)
            if figures["background_stored_per_s"] < 0.95 * figures["background_published_per_s"]:
                echo(
                    "ingest did not keep up with the background load: the loaded latencies measure"
                    " a backlog that grew for the whole run, not a steady state"
                )
            if report["error"]:
                echo(
                    f"the load generator failed after publishing ({report['error']}): its"
                    " sampled latencies are lost and fixes still queued in its client were not sent"
                )
            return figures
        finally:
            if client is not None:
                client.disconnect()
                client.loop_stop()
            if watcher is not None:
                watcher.stop.set()
                watcher.join(5)
            if load is not None:
                load.stop()
            if receiver is not None:
                receiver.stop()
            if directory is not None:  # services kept: stop sending to a receiver that is gone
                with psycopg.connect(env["TAGWATCH_DATABASE_URL"]) as conn:
                    deactivate_named(conn, f"bench-{run}")


def _print(figures: dict[str, float], rate: float, echo: Callable[[str], object]) -> None:
    for line in _table(figures, rate):
        echo(line)
    published, stored = figures["background_published"], figures["background_stored"]
    echo(
        f"background: published {published:,.0f} fixes at"
        f" {figures['background_published_per_s']:,.0f}/s (target {rate:,.0f}/s); stored"
        f" {stored:,.0f} at {figures['background_stored_per_s']:,.0f}/s"
        f" ({stored / max(1, published):.1%}) by {figures['ingest_workers']:.0f} ingest worker(s)"
        + (", worker k's threads on CPU k" if figures["ingest_pinned"] else "")
    )
    for phase in ("idle", "loaded"):
        echo(
            f"{phase} probes: {figures[f'{phase}_alerted']:.0f}/{figures[f'{phase}_probes']:.0f}"
            f" alerted, {figures[f'{phase}_delivered']:.0f} webhooks delivered,"
            f" {figures[f'{phase}_wrong_fix']:.0f} opened by another fix than the proving one,"
            f" {figures[f'{phase}_duplicated']:.0f} raised more than once"
        )
    echo(
        f"{figures['webhook_requests']:.0f} webhook requests,"
        f" {figures['bad_signatures']:.0f} with a bad signature;"
        f" {os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.1f}; the machine's"
        f" CPU was {figures['loaded_machine_busy']:.0%} busy while loaded (all processes: load,"
        " broker, database, ingest, dispatcher; near 100 % the latency is queueing)"
    )


def _settle(
    watcher: ProbeWatcher, receiver: WebhookReceiver, probes: list[Probe], timeout: float
) -> None:
    """After the drain: the last webhooks of probes whose alert came late (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _collect(receiver, probes)
        with watcher.lock:
            if all(p.alert_seen_at is None or p.webhook_at is not None for p in probes):
                return
        time.sleep(0.1)


def _stored(database_url: str, prefix: str, published: int) -> tuple[int, float]:
    """Background fixes stored once ingest has drained (or made no progress for
    ``DRAIN_PATIENCE_S``), and the span of their transactions' start times."""
    last, still = -1, 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            found = stored_like(conn, f"{prefix}-%")
            stored, span = found.stored, found.span_s
            still = still + 1 if stored == last else 0
            if stored >= published or still * DRAIN_POLL_S >= DRAIN_PATIENCE_S:
                return stored, span
            last = stored
            time.sleep(DRAIN_POLL_S)


if __name__ == "__main__":
    sys.exit(_load_child(sys.argv[1:]))
