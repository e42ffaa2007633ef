"""`tagwatch bench ingest`: fixes per second through the whole ingest path, beside the ceiling.

Each measurement drains a backlog that the broker holds for a persistent session (the fixes are
published first, while the consumer is away), so the publisher's speed does not enter the figure
and both consumers meet exactly the same stream:

* the ceiling: a bare paho subscriber that only counts messages (auto-acknowledged);
* ingest, one fix per message: broker → decode → COPY → commit → PUBACK;
* ingest, 50 fixes per message (store-and-forward uploads), same path.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from ingest.service import IngestService, subscriptions
from store.migrate import migrate
from tagwatch import services
from tagwatch.settings import MqttEndpoint, Settings

DEVICES = 200


def _client(endpoint: MqttEndpoint, client_id: str, clean: bool = False) -> mqtt.Client:
    """MQTT 3.1.1, as ingest speaks it, so the ceiling and ingest share the same client path."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=clean,
    )
    client.username_pw_set(endpoint.username, endpoint.password)
    return client


def _open_session(endpoint: MqttEndpoint, client_id: str) -> None:
    """Create a persistent session with the ingest subscriptions, then leave."""
    client = _client(endpoint, client_id)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in subscriptions(None)])
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
    client = _client(endpoint, f"bench-pub-{secrets.token_hex(3)}", clean=True)
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
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO devices (id, kind) VALUES (%s, 'tag') ON CONFLICT DO NOTHING",
            [(f"{prefix}-{i:03d}",) for i in range(DEVICES)],
        )


def measure_bare(
    endpoint: MqttEndpoint, publisher: MqttEndpoint, messages: list[tuple[str, bytes]]
) -> float:
    client_id = f"bench-bare-{secrets.token_hex(3)}"
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
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    _close_session(endpoint, client_id)
    return received / elapsed


def measure_ingest(
    settings: Settings, endpoint: MqttEndpoint, messages: list[tuple[str, bytes]], fixes: int
) -> tuple[float, float]:
    client_id = f"bench-ingest-{secrets.token_hex(3)}"
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
    return service.totals.fixes_stored / elapsed, len(messages) / elapsed


def run_benchmark(
    fixes: int = 100_000, directory: Path | None = None, echo: Callable[[str], object] = print
) -> dict[str, float]:
    fixes = max(DEVICES * 50, fixes - fixes % (DEVICES * 50))
    base = directory or Path(tempfile.mkdtemp(prefix="tagwatch-bench-"))
    echo(f"starting private services in {base} ...")
    state = services.up(base)
    env = state.env()
    try:
        migrate(env["TAGWATCH_DATABASE_URL"])
        settings = Settings.for_services(env, environment="test")
        gateway = MqttEndpoint.parse(settings.mqtt_gateway_url)
        bare_subscriber = MqttEndpoint.parse(settings.mqtt_url)
        run = secrets.token_hex(2)
        figures: dict[str, float] = {}

        echo(f"{fixes} fixes from {DEVICES} devices per run; backlog drained by each consumer")
        single = _messages(f"bb-{run}", fixes, 1)
        figures["bare_msgs_per_s"] = measure_bare(bare_subscriber, gateway, single)
        echo(f"  bare subscriber (ceiling)        {figures['bare_msgs_per_s']:>10,.0f} msg/s")

        _register(settings.database_url, f"bs-{run}")
        single = _messages(f"bs-{run}", fixes, 1)
        rate, _ = measure_ingest(settings, gateway, single, fixes)
        figures["ingest_single_fixes_per_s"] = rate
        figures["ingest_single_vs_bare"] = rate / figures["bare_msgs_per_s"]
        echo(
            f"  ingest, 1 fix per message        {rate:>10,.0f} fixes/s "
            f"({figures['ingest_single_vs_bare']:.2f} of the ceiling)"
        )

        _register(settings.database_url, f"bm-{run}")
        batched = _messages(f"bm-{run}", fixes, 50)
        rate, msg_rate = measure_ingest(settings, gateway, batched, fixes)
        figures["ingest_batch50_fixes_per_s"] = rate
        echo(f"  ingest, 50 fixes per message     {rate:>10,.0f} fixes/s ({msg_rate:,.0f} msg/s)")
        echo("targets: >= 15,000 fixes/s single (>= 0.8 of the ceiling); >= 100,000 batched")
        return figures
    finally:
        if directory is None:
            services.down(base)
            shutil.rmtree(base, ignore_errors=True)
