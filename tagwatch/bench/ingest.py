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
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from tagwatch import services
from tagwatch.alerts.rules import TRAIL_FIXES, DeviceState, SubjectState
from tagwatch.ingest.service import IngestService, subscriptions
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
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


def _tracked_state(device_id: str, last: float) -> dict[str, Any]:
    """The rule state of a subject tracked for a while (a full trail), last heard at ``last``."""
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
    return state.to_json()


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
            conn, [(sid, _tracked_state(ref, last)) for ref, sid in subject_ids.items()]
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
) -> float:
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
        assert settings.mqtt_gateway_url, "services up provisions the gateway"
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

        engine_fixes = max(ENGINE_DEVICES, fixes - fixes % ENGINE_DEVICES)
        echo(
            f"{engine_fixes} single fixes from {ENGINE_DEVICES:,} devices with subjects and open"
            f" assignments, {ENGINE_ZONES} global zones; alert engine on vs off"
        )
        for label, enabled in (("on", True), ("off", False)):
            prefix = f"be{label}-{run}"
            _register_subjects(settings.database_url, prefix, ENGINE_DEVICES)
            messages = _engine_messages(prefix, ENGINE_DEVICES, engine_fixes)
            rate, _ = measure_ingest(
                settings.model_copy(update={"alerts_enabled": enabled}),
                gateway,
                messages,
                engine_fixes,
            )
            figures[f"ingest_engine_{label}_fixes_per_s"] = rate
            echo(f"  ingest, 1 fix/msg, engine {label:<4}   {rate:>10,.0f} fixes/s")
        figures["engine_on_vs_off"] = (
            figures["ingest_engine_on_fixes_per_s"] / figures["ingest_engine_off_fixes_per_s"]
        )
        echo(f"  engine on / engine off            {figures['engine_on_vs_off']:>10.2f}")
        echo("targets: >= 15,000 fixes/s single (>= 0.8 of the ceiling); >= 100,000 batched")
        return figures
    finally:
        if directory is None:
            services.down(base)
            shutil.rmtree(base, ignore_errors=True)
