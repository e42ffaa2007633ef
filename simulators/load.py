"""`tagwatch load`: N devices reporting at a steady rate, and how fast their fixes are stored.

One machine cannot hold 100,000 MQTT connections, and the contract lets a gateway account
publish for many devices (as a LoRaWAN or cellular gateway does), so the load comes from a few
gateway connections. The devices, their subjects and assignments are registered in bulk (COPY),
so the fixes take the whole ingest path: decode, the alert engine, COPY, commit, acknowledge.

Latency is publish → committed: one fix in `sample` is remembered with the wall time it was
published, and a watcher polls the database for it; the time it first becomes visible is when it
was committed (to the poll interval). When the run ends the load subjects stop being monitored,
so that their silence does not raise 100,000 'no communication' alerts afterwards.
"""

from __future__ import annotations

import collections
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import paho.mqtt.client as mqtt
import psycopg

from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.store.devices import assign_to_namesakes, register_devices
from tagwatch.store.fixes import stored_among, stored_like
from tagwatch.store.subjects import add_namesakes, ensure_region, ids_by_case_ref

CENTRE = (18.4241, -33.9249)  # lon, lat: Cape Town
REGION = "load"
POLL_S = 0.02
MAX_OUTSTANDING = 50_000


@dataclass
class LoadReport:
    devices: int
    interval_s: float
    duration_s: float
    published: int = 0
    stored: int = 0
    publish_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    unseen: int = 0

    @property
    def rate(self) -> float:
        return self.published / self.publish_s if self.publish_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def figures(self) -> dict[str, float]:
        return {
            "devices": self.devices,
            "published": self.published,
            "stored": self.stored,
            "fixes_per_s": round(self.rate, 1),
            "sampled": len(self.latencies_s),
            "unseen": self.unseen,
            **{f"p{q}_ms": round(1000 * self.percentile(q), 1) for q in (50, 95, 99)},
        }

    def ms(self, q: float) -> str:
        return f"{1000 * self.percentile(q):.0f} ms"

    def lines(self) -> list[str]:
        target = self.devices / self.interval_s
        out = [
            f"devices {self.devices:,}, one fix each every {self.interval_s:g} s"
            f" (target {target:,.0f} fixes/s) for {self.duration_s:g} s",
            f"published {self.published:,} fixes at {self.rate:,.0f} fixes/s;"
            f" stored {self.stored:,} ({self.stored / max(1, self.published):.1%})",
        ]
        if self.latencies_s:
            out.append(
                f"publish → committed latency over {len(self.latencies_s):,} sampled fixes:"
                f" p50 {self.ms(50)}, p95 {self.ms(95)}, p99 {self.ms(99)}, max {self.ms(100)}"
            )
        if self.unseen:
            out.append(f"{self.unseen} sampled fixes were not stored within the wait")
        return out


def gateway_client(settings: Settings, name: str) -> mqtt.Client:
    """A connected client on the gateway account (which may publish for any device), for
    loads and benchmarks that speak for many devices at once."""
    if not settings.mqtt_gateway_url:
        msg = (
            "no gateway account (TAGWATCH_MQTT_GATEWAY_URL): it exists on development brokers only"
        )
        raise RuntimeError(msg)
    endpoint = MqttEndpoint.parse(settings.mqtt_gateway_url)
    # Service client ids start with "tagwatch", which no device may use (reserved ids).
    client = new_client(endpoint, f"tagwatch-gateway-{name}-{secrets.token_hex(3)}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        msg = f"the gateway connection {name} was not accepted"
        raise RuntimeError(msg)
    return client


def register(conn: psycopg.Connection, prefix: str, count: int, interval: float) -> list[str]:
    """Devices, one subject each and their assignments, in bulk; returns the device ids."""
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    start = datetime.now(UTC)
    with conn.transaction():
        ensure_region(conn, REGION, "Load test")
        register_devices(conn, ids, "tag", max(1, round(interval)))
        add_namesakes(conn, ids, REGION, "Africa/Johannesburg")
        assign_to_namesakes(conn, f"{prefix}-%", start)
    return ids


def release(conn: psycopg.Connection, prefix: str) -> None:
    """The load's subjects stop being monitored now (as a scenario's do when it ends)."""
    from tagwatch.simulators.runner import release as release_subjects  # noqa: PLC0415

    ids = ids_by_case_ref(conn, f"{prefix}-%")
    release_subjects(conn, list(ids.values()), time.time())


class Watcher(threading.Thread):
    """Polls for sampled fixes and records when each became visible (committed)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(name="load-watcher", daemon=True)
        self.database_url = database_url
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, int], tuple[datetime, float]] = {}
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def expect(self, device_id: str, seq: int, ts: datetime, published: float) -> None:
        with self.lock:
            self.pending[(device_id, seq)] = (ts, published)

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stop.is_set():
                with self.lock:
                    keys = list(self.pending.items())[:5000]
                if keys:
                    found = stored_among(conn, [(d, v[0], seq) for (d, seq), v in keys])
                    seen = time.time()
                    with self.lock:
                        for key in found:
                            entry = self.pending.pop((key.device_id, key.seq), None)
                            if entry is not None:
                                self.latencies.append(seen - entry[1])
                self.stop.wait(POLL_S)


def run_load(
    settings: Settings,
    devices: int,
    interval: float,
    duration: float,
    *,
    clients: int = 2,
    sample: int = 50,
    echo: Callable[[str], object] = print,
    stop: threading.Event | None = None,
) -> LoadReport:
    stop = stop or threading.Event()
    report = LoadReport(devices, interval, duration)
    prefix = f"load-{secrets.token_hex(3)}"
    rng = random.Random()
    with psycopg.connect(settings.database_url) as conn:
        started = time.perf_counter()
        ids = register(conn, prefix, devices, interval)
        echo(f"registered {devices:,} devices in {time.perf_counter() - started:.1f} s")
        try:
            publish_steady(settings, ids, report, clients, sample, rng, echo, stop)
        finally:
            release(conn, prefix)
        report.stored = stored_like(conn, f"{prefix}-%").stored
    return report


def publish_steady(
    settings: Settings,
    ids: list[str],
    report: LoadReport,
    clients: int,
    sample: int,
    rng: random.Random,
    echo: Callable[[str], object],
    stop: threading.Event,
) -> None:
    links = [gateway_client(settings, f"load-gw-{index}") for index in range(max(1, clients))]
    watcher = Watcher(settings.database_url)
    watcher.start()
    n = len(ids)
    lon = CENTRE[0] + np.array([rng.uniform(-0.2, 0.2) for _ in range(n)])
    lat = CENTRE[1] + np.array([rng.uniform(-0.2, 0.2) for _ in range(n)])
    seq = np.zeros(n, dtype=np.int64)
    t0 = time.time() + 0.5
    due = t0 + np.arange(n) * (report.interval_s / n)  # evenly spread phases: a steady rate
    end = t0 + report.duration_s
    last_report = t0
    count = 0
    infos: list[mqtt.MQTTMessageInfo] = []
    # paho's message ids are 16-bit: never more than this many unacknowledged per connection
    outstanding: list[collections.deque[mqtt.MQTTMessageInfo]] = [
        collections.deque() for _ in links
    ]
    try:
        while not stop.is_set():
            now = time.time()
            if now >= end:
                break
            ready = np.nonzero(due <= now)[0]
            for i in ready:
                seq[i] += 1
                lat[i] += rng.gauss(0, 2e-5)
                ts = round(time.time(), 3)
                body = (
                    f'{{"ts":{ts},"lat":{lat[i]:.6f},"lon":{lon[i]:.6f},"acc":8,'
                    f'"seq":{seq[i]},"batt":80,"src":"gps"}}'
                )
                device_id = ids[i]
                queue = outstanding[i % len(links)]
                while len(queue) >= MAX_OUTSTANDING:
                    queue.popleft().wait_for_publish(30)
                info = links[i % len(links)].publish(f"em/v1/{device_id}/fix", body, qos=1)
                queue.append(info)
                count += 1
                if count % sample == 0:
                    infos.append(info)
                    watcher.expect(
                        device_id, int(seq[i]), datetime.fromtimestamp(ts, UTC), time.time()
                    )
            due[ready] += report.interval_s
            if now - last_report >= 5.0:
                last_report = now
                echo(
                    f"  {now - t0:5.0f} s  published {count:,}"
                    f" ({count / max(1e-9, now - t0):,.0f} fixes/s)"
                    f"  sampled latency p50 {_p50(watcher)}"
                )
            time.sleep(max(0.0, min(0.01, float(due.min()) - time.time())))
        report.publish_s = max(1e-9, min(time.time(), end) - t0)
        report.published = count
        for info in infos:
            info.wait_for_publish(30)
        deadline = time.monotonic() + 30
        while watcher.pending and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop.set()
        watcher.join(5)
        for client in links:
            client.disconnect()
            client.loop_stop()
    report.latencies_s = list(watcher.latencies)
    report.unseen = len(watcher.pending)


def _p50(watcher: Watcher) -> str:
    with watcher.lock:
        values = list(watcher.latencies[-2000:])
    return f"{1000 * float(np.median(values)):.0f} ms" if values else "-"
