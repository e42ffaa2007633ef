"""The failover run's devices, in a process of their own (its own GIL): ``python -m
tagwatch.chaos.publisher SPEC.json``.

Background devices report at a steady total rate with no zones (their fixes take the whole ingest
and engine path and raise nothing); violators report every second and walk in and out of their
own exclusion zone (8 fixes at its centre, 8 fixes 1 km away), so alerts open and clear, and
notifications flow, all through the failover. Every fix is QoS 1 with its own ``seq``; a fix
counts as published once the broker acknowledged it (PUBACK), the figure the run compares the
store with.

It connects, prints ``{"ready": ...}``, waits for a line on stdin, publishes for the spec's
seconds, waits for the last acknowledgements and prints its report as one JSON line.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from tagwatch.settings import Settings
from tagwatch.simulators.load import gateway_client

CYCLE = 16  # a violator's fixes: the first half of each cycle inside its zone, the rest outside
OUTSIDE_DLAT = 0.01  # about 1.1 km north of the zone's centre: confidently outside
ACC_M = 5.0
MAX_OUTSTANDING = 50_000  # paho's message ids are 16-bit: fewer unacknowledged per connection


def background_ids(prefix: str, count: int) -> list[str]:
    """The ids `simulators.load.register` gives the background devices."""
    return [f"{prefix}-{i:06d}" for i in range(count)]


def violator_position(lon: float, lat: float, seq: int) -> tuple[float, float]:
    inside = (seq - 1) % CYCLE < CYCLE // 2
    return (lon, lat) if inside else (lon, lat + OUTSIDE_DLAT)


def publish(spec: dict[str, Any], say: Any) -> dict[str, Any]:
    settings = Settings.for_services(dict(os.environ), environment="test")
    clients = max(1, int(spec["clients"]))
    links = [gateway_client(settings, f"chaos-{i}") for i in range(clients)]
    background = background_ids(spec["background_prefix"], int(spec["background_count"]))
    violators = spec["violators"]  # [[device_id, lon, lat], ...]
    ids = background + [v[0] for v in violators]
    n_bg = len(background)
    rng = np.random.default_rng(int(spec.get("seed", 1)))
    lon = np.concatenate([18.42 + rng.uniform(-0.2, 0.2, n_bg), [v[1] for v in violators]])
    lat = np.concatenate([-33.92 + rng.uniform(-0.2, 0.2, n_bg), [v[2] for v in violators]])
    interval = np.concatenate(
        [np.full(n_bg, n_bg / max(1e-9, float(spec["background_rate"]))), np.ones(len(violators))]
    )
    seq = np.zeros(len(ids), dtype=np.int64)
    say({"ready": len(ids)})
    if not sys.stdin.readline():
        return {"published": 0}
    t0 = time.time() + 0.2
    due = t0 + rng.uniform(0, 1, len(ids)) * interval
    end = t0 + float(spec["seconds"])
    say({"publishing": t0})
    outstanding: list[collections.deque[mqtt.MQTTMessageInfo]] = [
        collections.deque() for _ in links
    ]
    sent = 0
    failed = 0
    while True:
        now = time.time()
        if now >= end:
            break
        ready = np.nonzero(due <= now)[0]
        for i in ready:
            seq[i] += 1
            s = int(seq[i])
            if i < n_bg:
                lat[i] += rng.normal(0, 2e-5)
                x, y = float(lon[i]), float(lat[i])
            else:
                x, y = violator_position(float(lon[i]), float(lat[i]), s)
            body = (
                f'{{"ts":{round(time.time(), 3)},"lat":{y:.6f},"lon":{x:.6f},"acc":{ACC_M:g},'
                f'"seq":{s},"batt":80,"src":"gps"}}'
            )
            k = int(i) % clients
            queue = outstanding[k]
            while len(queue) >= MAX_OUTSTANDING:
                failed += _settle(queue.popleft())
            info = links[k].publish(f"em/v1/{ids[i]}/fix", body, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                failed += 1
                continue
            queue.append(info)
            sent += 1
        due[ready] += interval[ready]
        time.sleep(max(0.0, min(0.005, float(due.min()) - time.time())))
    publish_s = time.time() - t0
    for queue in outstanding:
        while queue:
            failed += _settle(queue.popleft())
    for link in links:
        link.disconnect()
        link.loop_stop()
    return {
        "published": sent - failed,
        "unacknowledged": failed,
        "publish_s": publish_s,
        "violator_fixes": int(seq[n_bg:].sum()),
    }


def _settle(info: mqtt.MQTTMessageInfo) -> int:
    """0 once the broker acknowledged it, 1 if it never did (within a minute)."""
    try:
        info.wait_for_publish(60)
    except (RuntimeError, ValueError):
        return 1
    return 0 if info.is_published() else 1


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())

    def say(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)

    say(publish(spec, say))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
