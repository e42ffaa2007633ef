"""`tagwatch bench engine-states`: the alert engine's batch path alone, with and without the
decoded rule states it keeps between batches (alerts/state_cache.py), side by side.

`bench ingest` measures the whole worker, where the broker, decoding and the fixes' COPY share
two cores with PostgreSQL and the figures move by ±10 % from run to run; a change inside the
engine drowns in that. Here one process runs only what `write_batch` runs for the engine: per
batch of single fixes from different subjects (as live traffic arrives), a transaction with the
engine's savepoint, `AlertEngine.process` on the PostgreSQL repository, the commit, and the word
that it committed. Subjects start with a full trail (the `bench ingest` seed). Runs alternate
off/on, each on fixes newer than the last run's, so neither profits from the other's order.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tagwatch.alerts.batch import NewEvents, NewFixes
from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.state_cache import StateCache
from tagwatch.bench.harness import private_services
from tagwatch.bench.ingest import _register_subjects
from tagwatch.ingest import collector
from tagwatch.store.engine_repository import PgEngineRepository


def _batches(prefix: str, subjects: int, batch: int, rounds: int, t0: float) -> list[NewFixes]:
    """``rounds`` fixes per subject, 2 s apart from ``t0``, in batches of different subjects."""
    out = []
    for r in range(rounds):
        ts = t0 + 2.0 * r
        for start in range(0, subjects, batch):
            index = range(start, min(subjects, start + batch))
            out.append(
                NewFixes(
                    [f"{prefix}-{i:06d}" for i in index],
                    [ts] * len(index),
                    [18.4 + (i // 100) * 1e-3 for i in index],
                    [-33.9 - (i % 100) * 1e-3 for i in index],
                    [7.5] * len(index),
                    ["gps"] * len(index),
                )
            )
    return out


def _run(
    database_url: str, batches: list[NewFixes], capacity: int, gc_threshold: int
) -> dict[str, float]:
    engine = AlertEngine()
    engine.state_cache = StateCache(capacity)
    fixes = sum(len(b) for b in batches)
    thresholds = gc.get_threshold()
    with psycopg.connect(database_url) as conn, _restored_collector(thresholds):
        with conn.transaction():
            engine.sync(PgEngineRepository(conn))
        collector.settle(gc_threshold)  # as the worker does once its catalogue is loaded
        cpu, wall = time.process_time(), time.perf_counter()
        for fixes_of in batches:
            with conn.transaction(), conn.transaction():  # ingest's batch and engine savepoint
                engine.process(PgEngineRepository(conn), fixes_of, NewEvents())
            engine.state_cache.committed()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "fixes_per_s": fixes / wall,
        "cpu_us_per_fix": cpu / fixes * 1e6,
        "hits": float(engine.state_cache.hits),
        "misses": float(engine.state_cache.misses),
    }


@contextmanager
def _restored_collector(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """Each run starts from Python's collector as it was: nothing frozen by the run before."""
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def run(
    subjects: int = 20_000,
    batch: int = 2_000,
    rounds: int = 5,
    pairs: int = 3,
    directory: Path | None = None,
    echo: Callable[[str], Any] = print,
    gc_threshold: int = collector.DEFAULT_YOUNG_THRESHOLD,
) -> dict[str, float]:
    """Alternate ``pairs`` runs without and with the kept states; the medians and their ratio.
    The garbage collector is set as an ingest worker sets it (``gc_threshold``, 0: Python's)."""
    with private_services(directory, "tagwatch-bench-engine-") as (_, env):
        url = env["TAGWATCH_DATABASE_URL"]
        prefix = f"be{os.getpid()}"
        _register_subjects(url, prefix, subjects)  # each subject last heard 120 s ago
        t0 = time.time() - 110
        echo(
            f"{subjects:,} subjects, {rounds} fixes each in batches of {batch:,}; the engine's"
            " batch path alone (process + commit), runs alternating; garbage collector's young"
            f" threshold {gc_threshold or 'Python default'}"
        )
        results: dict[int, list[dict[str, float]]] = {0: [], subjects: []}
        step = 2.0 * rounds + 1.0
        for k in range(2 * pairs):
            capacity = subjects if k % 2 else 0
            batches = _batches(prefix, subjects, batch, rounds, t0 + k * step)
            figures = _run(url, batches, capacity, gc_threshold)
            results[capacity].append(figures)
            echo(
                f"  kept states {'on ' if capacity else 'off'}  {figures['fixes_per_s']:>8,.0f}"
                f" fixes/s  {figures['cpu_us_per_fix']:6.1f} µs CPU per fix"
                f"  (hits {figures['hits']:,.0f}, misses {figures['misses']:,.0f})"
            )

    def median(capacity: int, key: str) -> float:
        values = sorted(r[key] for r in results[capacity])
        return values[len(values) // 2]

    out = {
        "off_fixes_per_s": median(0, "fixes_per_s"),
        "on_fixes_per_s": median(subjects, "fixes_per_s"),
        "off_cpu_us_per_fix": median(0, "cpu_us_per_fix"),
        "on_cpu_us_per_fix": median(subjects, "cpu_us_per_fix"),
    }
    echo(
        f"  medians: off {out['off_fixes_per_s']:,.0f} fixes/s, {out['off_cpu_us_per_fix']:.1f} µs;"
        f" on {out['on_fixes_per_s']:,.0f} fixes/s, {out['on_cpu_us_per_fix']:.1f} µs"
        f" ({out['on_fixes_per_s'] / out['off_fixes_per_s']:.2f}x)"
    )
    return out
