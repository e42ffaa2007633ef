"""The first simulator: tags that register themselves and publish fixes with their own credentials.

Each simulated tag is a real MQTT client (client id = username = device_id, a retained `online`
status and an `offline` last will), so the demo exercises exactly what a real tag does: the
broker's per-device ACL, QoS 1, and ingest's exactly-once path.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg

from tagwatch.ingest.device_accounts import device_accounts
from tagwatch.ingest.provisioning import provision_device
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.simulators.obedience import Obedience, listen
from tagwatch.store.devices import add_assignment
from tagwatch.store.subjects import add_subject, ensure_region
from tagwatch.store.zones import ZoneDraft, create_zone, named_zones

CENTRE = (18.4241, -33.9249)  # Cape Town, lon/lat
METRES_PER_DEGREE = 111_320.0


@dataclass
class SimulationStats:
    devices: int = 0
    published: int = 0


@dataclass
class SimulatedTag:
    device_id: str
    password: str
    lon: float
    lat: float
    heading: float
    seq: int = 0

    def step(self, rng: random.Random, seconds: float) -> None:
        """A walker at ~1.4 m/s who turns now and then."""
        self.heading += rng.gauss(0, 0.5)
        distance = 1.4 * seconds
        self.lat += distance * math.cos(self.heading) / METRES_PER_DEGREE
        self.lon += (
            distance
            * math.sin(self.heading)
            / (METRES_PER_DEGREE * math.cos(math.radians(self.lat)))
        )

    def fix(self, rng: random.Random, now: float) -> dict[str, object]:
        acc = max(3.0, rng.gauss(8.0, 3.0))
        sigma = acc / 1.515  # per-axis sigma so that ~68 % of 2-D errors fall within acc
        self.seq += 1
        return {
            "ts": round(now, 3),
            "lat": self.lat + rng.gauss(0, sigma) / METRES_PER_DEGREE,
            "lon": self.lon
            + rng.gauss(0, sigma) / (METRES_PER_DEGREE * math.cos(math.radians(self.lat))),
            "acc": round(acc, 1),
            "seq": self.seq,
            "spd": 1.4,
            "batt": 80,
            "src": "gps",
        }


def connect_device(
    endpoint: MqttEndpoint,
    device_id: str,
    password: str,
    obedience: Obedience | None = None,
    changed: Callable[[], None] = lambda: None,
) -> mqtt.Client:
    """The tag's own connection on the devices' listener (TLS), client id = its device id; with
    ``obedience`` it also listens on its command topic and answers (simulators/obedience.py)."""
    client = new_client(endpoint.with_account(device_id, password), device_id)
    client.will_set(f"em/v1/{device_id}/status", "offline", qos=1, retain=True)
    if obedience is not None:
        listen(client, device_id, obedience, changed)
    client.connect(endpoint.host, endpoint.port, keepalive=60)
    client.loop_start()
    client.publish(f"em/v1/{device_id}/status", "online", qos=1, retain=True)
    return client


DEMO_ZONES = (  # name, lon/lat offset from the centre (degrees), radius m, warning band m
    ("demo: school grounds", (0.004, 0.003), 250.0, 200.0),
    ("demo: victim's street", (-0.006, -0.002), 300.0, 250.0),
    ("demo: magistrate's court", (0.001, -0.007), 200.0, 150.0),
)


def ensure_demo_zones(conn: psycopg.Connection, region: str) -> None:
    """A few keep-out zones for the region's walkers, so the demo's queue and map come alive
    with real alerts (regional global zones: every subject of the region must keep out)."""
    for name, (dlon, dlat), radius, band in DEMO_ZONES:
        if named_zones(conn, name, region_id=region):
            continue
        create_zone(
            conn,
            ZoneDraft(
                name=name,
                kind="exclusion",
                geometry={"type": "Point", "coordinates": [CENTRE[0] + dlon, CENTRE[1] + dlat]},
                radius_m=radius,
                buffer_m=band,
                region_id=region,
            ),
        )
    conn.commit()


def register_demo_tags(settings: Settings, count: int, region: str) -> list[SimulatedTag]:
    """Create the region, one subject per tag and the assignment, so the API shows positions."""
    rng = random.Random()
    run = secrets.token_hex(3)
    admin = device_accounts(settings)
    tags = []
    with psycopg.connect(settings.database_url) as conn:
        ensure_region(conn, region, f"{region} region")
        conn.commit()
        ensure_demo_zones(conn, region)
        for index in range(count):
            device_id = f"sim-{run}-{index:04d}"
            password = provision_device(conn, admin, device_id)
            with conn.transaction():
                subject_id = add_subject(
                    conn,
                    name=f"Simulated subject {run}-{index}",
                    region_id=region,
                    timezone="Africa/Johannesburg",
                )
                since = datetime(2000, 1, 1, tzinfo=UTC)
                add_assignment(conn, device_id, subject_id, "offender", since, None)
            tags.append(
                SimulatedTag(
                    device_id,
                    password,
                    CENTRE[0] + rng.uniform(-0.012, 0.012),
                    CENTRE[1] + rng.uniform(-0.012, 0.012),
                    rng.uniform(0, 2 * math.pi),
                )
            )
    return tags


def run_simulation(
    settings: Settings,
    devices: int,
    interval: float,
    duration: float | None,
    region: str = "demo",
    stop: threading.Event | None = None,
) -> SimulationStats:
    stop = stop or threading.Event()
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url)
    tags = register_demo_tags(settings, devices, region)
    wake = threading.Event()
    obeying = {tag.device_id: Obedience(interval) for tag in tags}
    clients = {
        tag.device_id: connect_device(
            endpoint, tag.device_id, tag.password, obeying[tag.device_id], wake.set
        )
        for tag in tags
    }
    stats = SimulationStats(devices=len(tags))
    rng = random.Random()
    started = time.monotonic()
    due = {tag.device_id: started for tag in tags}
    last = dict(due)
    try:
        # Each tag reports at its own interval, which commands change (pursuit: every 15 s).
        while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            now = time.monotonic()
            for tag in tags:
                obeys = obeying[tag.device_id]
                if obeys.locate_now:
                    obeys.locate_now, due[tag.device_id] = False, now
                if due[tag.device_id] > now:
                    continue
                tag.step(rng, now - last[tag.device_id])
                payload = json.dumps(tag.fix(rng, time.time()))
                clients[tag.device_id].publish(f"em/v1/{tag.device_id}/fix", payload, qos=1)
                stats.published += 1
                last[tag.device_id] = now
                due[tag.device_id] = now + obeys.interval(now)
            wake.wait(max(0.0, min(due.values()) - time.monotonic()))
            wake.clear()
            if stop.is_set():
                break
    except KeyboardInterrupt:
        pass
    finally:
        for device_id, client in clients.items():
            client.publish(f"em/v1/{device_id}/status", "offline", qos=1, retain=True)
            client.disconnect()
            client.loop_stop()
    return stats
