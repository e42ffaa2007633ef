"""`tagwatch bench store`: the fix store at national size.

Fills a fresh database (on a private PostgreSQL, or on the server of ``--database-url``) with
``rows`` fixes of a synthetic population (store/bench_store.py: tags every 60 s, a phone for one
subject in five, walks around homes clustered in cities, written in fix-time order as ingest
writes them), builds the schema's indexes once after the load, then times, over random subjects
and places, the API's own statements:

* a subject's 24-hour track (store/fixes.py ``track``, as ``GET /subjects/{id}/track``);
* proximity, 500 m x 1 hour around a place a subject was (``near``, as ``GET /proximity``);
* the compliance report of the month for a region (store/reports.py ``compliance``);

and reports bytes per fix (heap + indexes). With TimescaleDB (the extension preloaded) the same
again after compressing every chunk; without it that column says why it is empty.

Every answer is checked against an independent reference query (a plain count or a haversine
scan of the window): ``mismatches`` must be 0.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tagwatch import services
from tagwatch.api.routes.proximity import bounding_box
from tagwatch.store import bench_store, fixes, reports
from tagwatch.store.migrate import migrate

DATABASE = "tagwatch_bench_store"
PERIOD_START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday; the report month is March 2025
REPORT_MONTH = date(2025, 3, 1)
TRACK_LIMIT = 10_000  # the route's default limit
RADIUS_M = 500.0
WINDOW = timedelta(hours=1)
TARGETS = {
    "track_p99_ms": 50.0,
    "proximity_p99_ms": 200.0,
    "bytes_per_fix": 120.0,
    "bytes_per_fix_compressed": 15.0,
}
FILL_SLICE_ROWS = 2_000_000  # rows per INSERT statement (progress granularity)


@dataclass
class Timings:
    values_ms: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values_ms.append(seconds * 1000)

    def pct(self, q: float) -> float:
        """Nearest-rank percentile (p99 of 50 runs is the slowest run but none)."""
        ordered = sorted(self.values_ms)
        if not ordered:
            return math.nan
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


@dataclass
class Phase:
    """The figures of one storage layout (plain, or compressed hypertable)."""

    name: str
    track: Timings = field(default_factory=Timings)
    proximity: Timings = field(default_factory=Timings)
    compliance: Timings = field(default_factory=Timings)
    track_fixes: list[int] = field(default_factory=list)
    proximity_found: list[int] = field(default_factory=list)
    size: bench_store.Size | None = None


@dataclass(frozen=True)
class Plan:
    """How many subjects and minutes make ``rows`` fixes over about ``days`` days."""

    rows: int
    subjects: int
    minutes: int

    @property
    def phones(self) -> int:
        return self.subjects // 5

    @property
    def per_minute(self) -> float:
        return self.subjects + self.phones / bench_store.PHONE_EVERY

    @property
    def end(self) -> datetime:
        return PERIOD_START + timedelta(minutes=self.minutes)


def plan(rows: int, days: float, subjects: int | None) -> Plan:
    per_subject_minute = 1 + 0.2 / bench_store.PHONE_EVERY
    if subjects is None:
        subjects = max(2, round(rows / (per_subject_minute * days * 1440)))
    minutes = max(60, round(rows / Plan(rows, subjects, 1).per_minute))
    return Plan(rows, subjects, minutes)


def _database_url(server_url: str, name: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def _fill(
    conn: psycopg.Connection[Any], layout: Plan, seed: float, echo: Callable[[str], None]
) -> dict[str, float]:
    timing: dict[str, float] = {}
    bench_store.prepare_bulk_session(conn)
    bench_store.fill_population(conn, layout.subjects, PERIOD_START, seed)
    indexes = bench_store.fix_indexes(conn)
    bench_store.drop_indexes(conn, indexes)
    started = time.perf_counter()
    step = max(1, int(FILL_SLICE_ROWS / layout.per_minute))
    written = 0
    reported = 0.0
    for first in range(0, layout.minutes, step):
        last = min(layout.minutes, first + step) - 1
        written += bench_store.fill_minutes(conn, PERIOD_START, first, last)
        done = (last + 1) / layout.minutes
        if done - reported >= 0.1 or last + 1 == layout.minutes:
            reported = done
            rate = written / max(1e-9, time.perf_counter() - started)
            echo(f"  filled {written:,} fixes ({done:.0%}), {rate:,.0f} fixes/s")
    timing["fill_s"] = time.perf_counter() - started
    started = time.perf_counter()
    bench_store.create_indexes(conn, indexes)
    timing["index_s"] = time.perf_counter() - started
    started = time.perf_counter()
    bench_store.vacuum_analyze(conn)
    timing["vacuum_analyze_s"] = time.perf_counter() - started
    timing["written"] = written
    return timing


async def _timed(timings: Timings, call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await call
    timings.add(time.perf_counter() - started)
    return result


async def _measure(
    database_url: str,
    phase: Phase,
    samples: list[bench_store.Sample],
    regions: list[str],
    check: psycopg.Connection[Any],
    echo: Callable[[str], None],
) -> int:
    """Time the API's statements over ``samples``; return how many answers disagreed with the
    reference queries (on ``check``)."""
    mismatches = 0
    month = reports.Month(REPORT_MONTH, "UTC")
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        buckets = await reports.timescale_fix_buckets(conn)
        warm = samples[: min(3, len(samples))]
        for sample in warm:  # the first touches of the catalogue and the plans, not timed
            await fixes.track(conn, sample.subject_id, sample.ts - timedelta(days=1), sample.ts, 10)
        for sample in samples:
            end = sample.ts
            start = end - timedelta(hours=24)
            rows = await _timed(
                phase.track, fixes.track(conn, sample.subject_id, start, end, TRACK_LIMIT)
            )
            phase.track_fixes.append(len(rows))
            expected = bench_store.reference_track_count(check, sample.subject_id, start, end)
            ordered = all(a["ts"] <= b["ts"] for a, b in itertools.pairwise(rows))
            if len(rows) != min(expected, TRACK_LIMIT) or not ordered:
                mismatches += 1
                echo(f"  MISMATCH track {sample.subject_id}: {len(rows)} vs {expected}")
        for sample in samples:
            lat = sample.lat + 100 / 111_320  # 100 m north of where the subject was
            start, end = sample.ts - WINDOW / 2, sample.ts + WINDOW / 2
            found = await _timed(
                phase.proximity,
                fixes.near(
                    conn,
                    lat=lat,
                    lon=sample.lon,
                    radius_m=RADIUS_M,
                    start=start,
                    end=end,
                    regions=None,
                    victims=True,
                    late_after_s=300.0,
                    box=bounding_box(lat, sample.lon, RADIUS_M),
                ),
            )
            phase.proximity_found.append(len(found))
            answer = {int(r["subject_id"]): int(r["fixes_within"]) for r in found}
            expected_near = bench_store.reference_near(check, lat, sample.lon, RADIUS_M, start, end)
            if answer != expected_near or sample.subject_id not in answer:
                mismatches += 1
                echo(f"  MISMATCH proximity near {sample.subject_id}: {answer} vs {expected_near}")
        for region in regions:
            report = await _timed(
                phase.compliance, reports.compliance(conn, region, month, now, buckets)
            )
            expected_fixes = bench_store.reference_region_fixes(
                check, region, month.start, month.end
            )
            if report["fixes"] != expected_fixes:
                mismatches += 1
                echo(f"  MISMATCH compliance {region}: {report['fixes']} vs {expected_fixes}")
    return mismatches


def _phase_line(label: str, phase: Phase, mismatches: int) -> str:
    """One phase's figures as soon as they are measured: a long run stopped in its next step
    (compressing 100M fixes takes minutes) still leaves them in its log."""
    assert phase.size is not None
    return (
        f"  {label}: track {_ms(phase.track)} ms, proximity {_ms(phase.proximity)} ms,"
        f" compliance {_ms(phase.compliance)} ms (p50 / p99),"
        f" {phase.size.per_fix(phase.size.total_bytes):.1f} bytes per fix;"
        f" mismatches {mismatches}"
    )


def _ms(timings: Timings) -> str:
    if not timings.values_ms:
        return "-"
    return f"{timings.pct(50):.1f} / {timings.pct(99):.1f}"


def _row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [_row(rows[0], widths), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(_row(r, widths) for r in rows[1:])
    return out


def _size_cell(size: bench_store.Size | None) -> str:
    if size is None:
        return "-"
    parts = [f"heap {size.per_fix(size.table_bytes):.1f}"]
    parts += [f"{name} {size.per_fix(b):.1f}" for name, b in size.index_bytes.items()]
    return f"{size.per_fix(size.total_bytes):.1f} ({', '.join(parts)})"


def report_table(plain: Phase, compressed: Phase | None, skipped: str | None) -> list[str]:
    other = "TimescaleDB, compressed"
    first = "plain PostgreSQL" if compressed is None else "TimescaleDB, uncompressed"
    missing = f"skipped: {skipped}" if skipped else "-"

    def cell(phase: Phase | None, value: Callable[[Phase], str]) -> str:
        return value(phase) if phase is not None else missing

    return _table(
        [
            # With TimescaleDB the first column is the hypertable before compression.
            ["figure (p50 / p99 ms)", first, other, "target"],
            [
                "track, one subject's 24 h",
                _ms(plain.track),
                cell(compressed, lambda p: _ms(p.track)),
                f"p99 <= {TARGETS['track_p99_ms']:.0f} ms",
            ],
            [
                "proximity, 500 m x 1 h",
                _ms(plain.proximity),
                cell(compressed, lambda p: _ms(p.proximity)),
                f"p99 <= {TARGETS['proximity_p99_ms']:.0f} ms",
            ],
            [
                "compliance report, region x month",
                _ms(plain.compliance),
                cell(compressed, lambda p: _ms(p.compliance)),
                "-",
            ],
            [
                "bytes per fix (table + indexes)",
                _size_cell(plain.size),
                cell(compressed, lambda p: _size_cell(p.size)),
                f"<= {TARGETS['bytes_per_fix']:.0f} / <= {TARGETS['bytes_per_fix_compressed']:.0f}"
                " compressed",
            ],
        ]
    )


def run(
    rows: int = 100_000_000,
    *,
    days: float = 7.0,
    subjects: int | None = None,
    samples: int = 50,
    database_url: str | None = None,
    directory: Path | None = None,
    keep: bool = False,
    explain: bool = False,
    seed: float = 0.17,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fill, measure, print the table; return the figures (``mismatches`` must be 0)."""
    layout = plan(rows, days, subjects)
    base: Path | None = None
    own_dir = False
    if database_url is None:
        own_dir = directory is None
        base = directory or Path(tempfile.mkdtemp(prefix="tagwatch-bench-store-"))
        state = services.up(base)
        database_url = state.env()["TAGWATCH_DATABASE_URL"]
    admin_url = _database_url(database_url, "postgres")
    url = _database_url(database_url, DATABASE)
    figures: dict[str, Any] = {}
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            bench_store.create_database(admin, DATABASE)
        try:
            migrate(url)
            figures = _bench(url, layout, samples, explain, seed, echo)
        finally:
            if not keep:
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    bench_store.drop_database(admin, DATABASE)
            else:
                echo(f"kept: {url}")
    finally:
        if base is not None and not keep:
            services.down(base)
            if own_dir:
                shutil.rmtree(base, ignore_errors=True)
    return figures


def _bench(
    url: str, layout: Plan, samples: int, explain: bool, seed: float, echo: Callable[[str], None]
) -> dict[str, Any]:
    echo(
        f"bench store: {layout.rows:,} fixes = {layout.subjects:,} subjects (tags every 60 s,"
        f" {layout.phones:,} phones every {bench_store.PHONE_EVERY} min) over"
        f" {layout.minutes / 1440:.2f} days from {PERIOD_START:%Y-%m-%d};"
        f" {layout.per_minute * 60:,.0f} fixes per hour nationally"
    )
    figures: dict[str, Any] = {"subjects": layout.subjects, "days": layout.minutes / 1440}
    with psycopg.connect(url, autocommit=True) as conn:
        timescale = bench_store.is_hypertable(conn)
        timing = _fill(conn, layout, seed, echo)
        figures.update(timing)
        echo(
            f"  fill {timing['fill_s']:.1f} s"
            f" ({timing['written'] / timing['fill_s']:,.0f} fixes/s),"
            f" index build {timing['index_s']:.1f} s, vacuum + analyze"
            f" {timing['vacuum_analyze_s']:.1f} s"
        )
        if timescale:
            started = time.perf_counter()
            if bench_store.refresh_report_aggregate(conn):
                figures["aggregate_refresh_s"] = time.perf_counter() - started
                echo(
                    f"  report aggregate refreshed in {figures['aggregate_refresh_s']:.1f} s"
                    " (its policy's work in service, every 15 minutes)"
                )
        plain = Phase("plain")
        plain.size = (
            bench_store.hypertable_size(conn) if timescale else bench_store.fixes_size(conn)
        )
        # Tracks end a day or more into the period, so each holds a whole day.
        first = PERIOD_START + min(timedelta(days=1), (layout.end - PERIOD_START) / 2)
        picks = bench_store.sample_fixes(conn, first, layout.end, samples, seed)
        regions = [f"bench-{r}" for r in range(bench_store.BENCH_REGIONS)]
        regions = regions[: max(2, min(len(regions), samples // 5))]
        mismatches = asyncio.run(_measure(url, plain, picks, regions, conn, echo))
        echo(_phase_line("uncompressed" if timescale else "plain", plain, mismatches))
        plans = _plans(conn, picks[0]) if picks else {}
        compressed: Phase | None = None
        skipped: str | None = None
        if timescale:
            started = time.perf_counter()
            chunks = bench_store.compress_all(conn)
            figures["compress_s"] = time.perf_counter() - started
            echo(f"  compressed {chunks} chunks in {figures['compress_s']:.1f} s")
            bench_store.vacuum_analyze(conn)
            compressed = Phase("compressed")
            compressed.size = bench_store.hypertable_size(conn)
            columns = bench_store.compressed_column_bytes(conn, compressed.size.rows)
            figures["compressed_column_bytes_per_fix"] = columns
            echo(
                "  compressed bytes per fix by column: "
                + ", ".join(f"{c} {v:.2f}" for c, v in columns.items() if v >= 0.05)
            )
            _row_models(conn, layout, figures, echo)
            found = asyncio.run(_measure(url, compressed, picks, regions, conn, echo))
            echo(_phase_line("compressed", compressed, found))
            mismatches += found
        else:
            skipped = "TimescaleDB not installed"
    figures["mismatches"] = mismatches
    figures["samples"] = len(picks)
    figures["regions"] = len(regions)
    for phase in (plain, compressed):
        if phase is None:
            continue
        prefix = "" if phase is plain else "compressed_"
        for name in ("track", "proximity", "compliance"):
            timings: Timings = getattr(phase, name)
            figures[f"{prefix}{name}_p50_ms"] = timings.pct(50)
            figures[f"{prefix}{name}_p99_ms"] = timings.pct(99)
        assert phase.size is not None
        figures[f"{prefix}rows"] = phase.size.rows
        figures[f"{prefix}bytes_per_fix"] = phase.size.per_fix(phase.size.total_bytes)
        figures[f"{prefix}heap_bytes_per_fix"] = phase.size.per_fix(phase.size.table_bytes)
        figures[f"{prefix}index_bytes_per_fix"] = {
            k: phase.size.per_fix(v) for k, v in phase.size.index_bytes.items()
        }
    figures["track_fixes_mean"] = sum(plain.track_fixes) / max(1, len(plain.track_fixes))
    figures["proximity_subjects_mean"] = sum(plain.proximity_found) / max(
        1, len(plain.proximity_found)
    )
    figures["timescale_skipped"] = skipped
    figures["load_average"] = os.getloadavg()
    echo(
        f"  load average while measuring: {figures['load_average'][0]:.2f}"
        f" on {os.cpu_count()} cores"
    )
    echo(
        f"  {len(picks)} tracks (mean {figures['track_fixes_mean']:.0f} fixes),"
        f" {len(picks)} proximity searches (mean {figures['proximity_subjects_mean']:.1f}"
        f" subjects found), {len(regions)} compliance reports; mismatches: {mismatches}"
    )
    for line in report_table(plain, compressed, skipped):
        echo(line)
    if explain:
        for name, text in plans.items():
            echo(f"\nEXPLAIN {name}:\n{text}")
    figures["plans"] = plans
    return figures


ROW_MODEL_SUBJECTS = 200  # bench subjects whose devices the row-model diagnostic copies


def _row_models(
    conn: psycopg.Connection[Any],
    layout: Plan,
    figures: dict[str, Any],
    echo: Callable[[str], None],
) -> None:
    """What the compressed figure would be with the numbers stored as scaled integers, beside
    the layout as stored, on the same sampled devices (store.bench_store.row_model_bytes)."""
    subjects = min(ROW_MODEL_SUBJECTS, layout.subjects)
    started = time.perf_counter()
    models = bench_store.row_model_bytes(conn, subjects)
    echo(
        f"  row models, compressed, on the devices of {subjects} subjects"
        f" ({models[0].rows:,} fixes, {time.perf_counter() - started:.1f} s):"
    )
    for model in models:
        exact = "exact" if model.inexact == 0 else f"{model.inexact:,} fixes not exact"
        echo(f"    {model.bytes_per_fix:5.1f} bytes per fix  {model.name} ({exact})")
    figures["row_models"] = {
        m.name.strip(): {"bytes_per_fix": m.bytes_per_fix, "inexact": m.inexact} for m in models
    }


def _plans(conn: psycopg.Connection[Any], sample: bench_store.Sample) -> dict[str, str]:
    lat = sample.lat + 100 / 111_320
    track_params = {
        "subject": sample.subject_id,
        "start": sample.ts - timedelta(hours=24),
        "end": sample.ts,
        "limit": TRACK_LIMIT,
    }
    box = bounding_box(lat, sample.lon, RADIUS_M)
    statement, cells = fixes.search_statement(box)
    near_params = {
        "cells": cells,
        "lat": lat,
        "lon": sample.lon,
        "radius": RADIUS_M,
        "start": sample.ts - WINDOW / 2,
        "end": sample.ts + WINDOW / 2,
        "regions": None,
        "late_after": 300.0,
        "victims": True,
        **fixes.box_parameters(box),
    }
    return {
        "track": bench_store.explain(conn, fixes.TRACK, track_params),
        "proximity": bench_store.explain(conn, statement, near_params),
    }
