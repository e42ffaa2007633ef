"""`tagwatch bench cold-start`: how long a restarted ingest evaluates nothing, at national size.

A private PostgreSQL and Mosquitto get the national catalogue of `bench geofence` (by default
100,000 subjects with their curfew, exclusion and district zones and 1,000 global zones: about
351,000 zone rows with their GeoJSON), written the way the API would leave it. A probe subject's
tag has published ten fixes inside one of its exclusion zones while ingest was down (the broker
kept them in ingest's session). Then `tagwatch ingest` is started as a process and the clock runs
from the spawn until the probe's `exclusion_zone_entry` is committed: the first batch evaluated.

Measured twice in the same run, side by side:

* **from the tables**: no snapshot, so the worker reads every zone row and builds the index (what
  every start cost before the catalogue snapshot); it then saves a snapshot in a forked child;
* **from the snapshot**: a zone is drawn and a subject moved while ingest is down, a second probe
  publishes, and the worker starts again: it loads the snapshot, catches up, evaluates.

The figures: seconds from spawn to the first evaluated batch, the worker's own "zone index
ready" time, the snapshot's size and how long its child took to write it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tagwatch.bench.geofence import TIMEZONE, NationalSet
from tagwatch.bench.harness import Child, private_services
from tagwatch.bench.ingest import _open_session, _publish
from tagwatch.geofence import Zone
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.store.bench_catalogue import (
    alerts_of,
    analyze_catalogue,
    seed_subjects,
    seed_zones,
    set_groups,
)
from tagwatch.store.devices import add_assignment, register_device
from tagwatch.store.zones import ZoneDraft, create_zone

REGION = ("za-bench", "Bench country")
ENTRY = "exclusion_zone_entry"
TARGET_S = 15.0


def _row(zone: Zone, subject_of: dict[int, int]) -> tuple[Any, ...]:
    return (
        f"bench zone {zone.zone_id}",
        zone.kind.value,
        zone.geometry,
        zone.radius_m,
        zone.buffer_m,
        None if zone.subject_id is None else subject_of[zone.subject_id],
        zone.group,
        REGION[0] if zone.subject_id is None and zone.group is None else None,
        None if zone.schedule is None else zone.schedule.to_json(),
    )


def seed(database_url: str, national: NationalSet, echo: Callable[[str], Any]) -> list[int]:
    """The national catalogue in the database; the subjects' ids in the set's order."""
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        ids = seed_subjects(
            conn,
            REGION,
            [(f"bench-{s}", TIMEZONE, national.groups[s]) for s in national.subject_ids.tolist()],
        )
        subject_of = dict(zip(national.subject_ids.tolist(), ids, strict=True))
        count = seed_zones(conn, [_row(z, subject_of) for z in national.zones])
        analyze_catalogue(conn)
    echo(
        f"catalogue: {len(ids):,} subjects and {count:,} zones written in"
        f" {time.perf_counter() - started:.0f} s"
    )
    return ids


def _probe(database_url: str, device_id: str, subject_id: int) -> None:
    """A tag held by the subject since yesterday."""
    since = datetime.now(UTC) - timedelta(days=1)
    with psycopg.connect(database_url) as conn:
        register_device(conn, device_id, "tag", None, 60)
        add_assignment(conn, device_id, subject_id, "offender", since, None)


def _probe_fixes(device_id: str, lon: float, lat: float) -> list[tuple[str, bytes]]:
    """Ten fixes 30 s apart inside the exclusion zone, ending a few seconds ago: an entry."""
    end = time.time() - 5
    return [
        (
            f"em/v1/{device_id}/fix",
            json.dumps(
                {"ts": end - 30 * (9 - i), "lat": lat, "lon": lon, "acc": 5, "seq": i}
            ).encode(),
        )
        for i in range(10)
    ]


_READY = re.compile(r"zone index ready in ([0-9.]+) s from the (\w+)")


def _start(
    env: dict[str, str], log_dir: Path, name: str, database_url: str, subject_id: int
) -> tuple[Child, float, float, str]:
    """Spawn ingest; return it, seconds to the probe's entry alert, to its index, and source."""
    spawned = time.perf_counter()
    child = Child(name, ["tagwatch", "ingest"], env, log_dir)
    with psycopg.connect(database_url, autocommit=True) as conn:
        while alerts_of(conn, subject_id, ENTRY) == 0:
            if child.process.poll() is not None or time.perf_counter() - spawned > 900:
                child.stop()
                msg = f"ingest evaluated nothing:\n{child.log()[-3000:]}"
                raise RuntimeError(msg)
            time.sleep(0.05)
    first = time.perf_counter() - spawned
    found = _READY.search(child.log())
    ready, source = (float(found.group(1)), found.group(2)) if found else (float("nan"), "?")
    return child, first, ready, source


def run(
    subjects: int = 100_000,
    global_zones: int = 1_000,
    seed_value: int = 1,
    directory: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, float]:
    national = NationalSet(subjects, global_zones, seed_value)
    with private_services(directory, "tagwatch-bench-cold-") as (_, env):
        settings = Settings.for_services(env, environment="test")
        assert settings.mqtt_gateway_url, "services up provisions the gateway"
        ids = seed(settings.database_url, national, echo)
        work = Path(tempfile.mkdtemp(prefix="tagwatch-cold-"))
        snapshot = work / "catalogue.snap"
        client_id = f"tagwatch-cold-{os.getpid()}"
        child_env = {
            **os.environ,
            **env,
            "TAGWATCH_ENVIRONMENT": "test",
            "TAGWATCH_INGEST_CLIENT_ID": client_id,
            "TAGWATCH_INDEX_SNAPSHOT": str(snapshot),
        }
        gateway = MqttEndpoint.parse(settings.mqtt_gateway_url)
        _open_session(MqttEndpoint.parse(settings.mqtt_url), client_id)
        # two probes: subjects with an exclusion zone, each a tag standing at its centre
        probes: list[tuple[int, float, float, str]] = []
        seen: set[int] = set()
        for index, lon, lat in national.exclusion_centres:
            if index not in seen:
                seen.add(index)
                probes.append((ids[index], lon, lat, f"cold-probe-{len(probes)}"))
            if len(probes) == 2:
                break
        for subject_id, _, _, device_id in probes:
            _probe(settings.database_url, device_id, subject_id)
        figures: dict[str, float] = {}
        try:
            subject_id, lon, lat, device_id = probes[0]
            _publish(gateway, _probe_fixes(device_id, lon, lat))
            child, first, ready, source = _start(
                child_env, work, "ingest-tables", settings.database_url, subject_id
            )
            saved = time.perf_counter()
            child.wait_for_log("catalogue snapshot saved", 900)
            save_s = time.perf_counter() - saved
            child.stop()
            figures.update(tables_first_batch_s=first, tables_ready_s=ready)
            size_mb = snapshot.stat().st_size / 1e6
            figures.update(snapshot_mb=size_mb, snapshot_save_s=save_s)
            echo(
                f"  from the tables   {first:>6.1f} s to the first evaluated batch"
                f" (zone index ready after {ready:.1f} s, source: {source})"
            )
            echo(
                f"      snapshot saved by a forked child: {size_mb:,.0f} MB,"
                f" written within {save_s:.1f} s of that batch"
            )
            # while ingest is down: a zone drawn and a subject moved to a group
            with psycopg.connect(settings.database_url) as conn:
                create_zone(
                    conn,
                    ZoneDraft(
                        name="drawn while down",
                        kind="exclusion",
                        geometry={"type": "Point", "coordinates": [lon + 0.3, lat + 0.3]},
                        radius_m=300,
                        region_id=REGION[0],
                    ),
                )
                set_groups(conn, ids[2], ["sex_offence"])
            subject_id, lon, lat, device_id = probes[1]
            _publish(gateway, _probe_fixes(device_id, lon, lat))
            child, first, ready, source = _start(
                child_env, work, "ingest-snapshot", settings.database_url, subject_id
            )
            child.stop()
            figures.update(snapshot_first_batch_s=first, snapshot_ready_s=ready)
            figures["snapshot_used"] = float(source == "snapshot")
            echo(
                f"  from the snapshot {first:>6.1f} s to the first evaluated batch"
                f" (zone index ready after {ready:.1f} s, source: {source})"
            )
            echo(
                f"  the snapshot spares {figures['tables_first_batch_s'] - first:.1f} s"
                f" ({figures['tables_first_batch_s'] / first:.1f}x faster);"
                f" target: first batch <= {TARGET_S:.0f} s"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return figures
