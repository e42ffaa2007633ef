"""Fixes as the API reads them: a subject's latest position, its track, the live overview.

Only the fixes of devices the subject held as offender count, each inside its holding period
(a device reassigned to someone else does not bring its past into their track).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from tagwatch.store.fix_columns import as_read, value

# Fixes of the devices the subject held as offender, each inside its holding period, in
# [%(start)s, %(end)s): one probe per held device (the LATERAL is kept apart by OFFSET 0, so the
# planner cannot make it a join). With TimescaleDB the device is the segment-by column, so a
# compressed chunk reads only that device's batches; written as a join the planner decompressed
# the whole chunk (every device's day, 142,272 rows at 1M fixes) and hashed it: 22.7 ms for a
# track that now takes 1.9 ms. On plain PostgreSQL it is the plan the join had: the
# (device_id, ts) btree, per device.
HELD_FIXES_IN_WINDOW = f"""
    FROM device_assignments a
    CROSS JOIN LATERAL (
        SELECT {as_read("x")} FROM fixes x
        WHERE x.device_id = a.device_id AND x.ts >= %(start)s AND x.ts < %(end)s
          AND x.ts >= lower(a.during) AND (upper_inf(a.during) OR x.ts < upper(a.during))
        OFFSET 0
    ) f
    WHERE a.subject_id = %(subject)s AND a.role = 'offender'
"""
FIX_COLUMNS = (
    "f.device_id, f.ts, f.lat, f.lon, f.acc, f.spd, f.hdg, f.batt, f.src, f.seq, f.received_at"
)


# The latest fix of each subject in scope, from the offender devices the subject holds now: one
# backward probe of the fixes index (device_id, ts, seq) per held device, not a scan.
OVERVIEW = f"""
SELECT s.id, s.name, s.region_id, p.device_id, p.ts, p.lat, p.lon, p.acc, p.src, p.batt,
       EXTRACT(EPOCH FROM now() - p.ts)::float8 AS age_s, p.expected_interval_s
FROM subjects s
JOIN LATERAL (
    SELECT f.device_id, f.ts, f.lat, f.lon, f.acc, f.src, f.batt, d.expected_interval_s
    FROM device_assignments a
    JOIN devices d ON d.id = a.device_id
    JOIN LATERAL (
        SELECT x.device_id, x.ts, {value("lat", "x")} AS lat, {value("lon", "x")} AS lon,
               {value("acc", "x")} AS acc, x.src, x.batt
        FROM fixes x
        WHERE x.device_id = a.device_id AND x.ts >= lower(a.during)
          AND (upper_inf(a.during) OR x.ts < upper(a.during))
        ORDER BY x.ts DESC, x.seq DESC
        LIMIT 1
    ) f ON true
    WHERE a.subject_id = s.id AND a.role = 'offender' AND a.during @> now()
    ORDER BY f.ts DESC
    LIMIT 1
) p ON true
WHERE (%(regions)s::text[] IS NULL OR s.region_id = ANY(%(regions)s::text[]))
  AND (%(region)s::text IS NULL OR s.region_id = %(region)s::text)
  AND (%(victims)s OR NOT s.victim)
ORDER BY s.id
LIMIT %(limit)s
"""


# The fixes of the range (the first `limit`), thinned evenly by time when there are more than
# max_points: the span first..last is cut into max_points - 1 equal steps, and for each instant
# first + i * step the first fix at or after it is kept (so the first and the last fix always
# are, and a gap never yields two points for one instant). Numeric epochs: exact to the
# microsecond, so the last fix falls in the last bucket.
THINNED = f"""
WITH sel AS (
    SELECT {FIX_COLUMNS} {HELD_FIXES_IN_WINDOW}
    ORDER BY f.ts, f.seq LIMIT %(limit)s
), span AS (
    SELECT min(ts) AS t0, max(ts) AS t1, count(*) AS n FROM sel
), numbered AS (
    SELECT sel.*, span.n,
           CASE WHEN span.n <= %(max_points)s
                THEN row_number() OVER (ORDER BY sel.ts, sel.seq)
                WHEN span.t1 = span.t0 THEN 0
                ELSE floor(EXTRACT(EPOCH FROM sel.ts - span.t0) * (%(max_points)s - 1)
                           / EXTRACT(EPOCH FROM span.t1 - span.t0))::bigint
           END AS bucket
    FROM sel CROSS JOIN span
)
SELECT DISTINCT ON (bucket) device_id, ts, lat, lon, acc, spd, hdg, batt, src, seq,
       received_at, n
FROM numbered ORDER BY bucket, ts, seq
"""


async def overview(
    conn: AsyncConnection[Any],
    regions: Sequence[str] | None,
    region: str | None,
    victims: bool,
    limit: int,
) -> list[dict[str, Any]]:
    """The latest fix of each subject in scope, by subject id, at most ``limit``."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        OVERVIEW, {"regions": regions, "region": region, "victims": victims, "limit": limit}
    )
    return await cur.fetchall()


# The subject's last position: the newest fix of each device it held as offender (while held),
# by one backward probe per device as OVERVIEW does, then the newest of those. Written as a join
# of assignments and fixes ordered by ts, the plan walked the whole nation's fixes newest first
# until one was the subject's: on a hypertable, every chunk on the way decompressed whole and
# sorted (a day is 1.4M fixes at 10M stored), so a subject silent for a day cost seconds. Two
# devices' fixes at the same instant (a tag and a phone in the same minute): the more accurate.
LATEST = f"""
SELECT {FIX_COLUMNS}
FROM device_assignments a
CROSS JOIN LATERAL (
    SELECT {as_read("x")} FROM fixes x
    WHERE x.device_id = a.device_id AND x.ts >= lower(a.during)
      AND (upper_inf(a.during) OR x.ts < upper(a.during))
    ORDER BY x.ts DESC, x.seq DESC
    LIMIT 1
) f
WHERE a.subject_id = %(subject)s AND a.role = 'offender'
ORDER BY f.ts DESC, f.acc NULLS LAST, f.device_id
LIMIT 1
"""


async def latest_fix(conn: AsyncConnection[Any], subject_id: int) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(LATEST, {"subject": subject_id})
    return await cur.fetchone()


TRACK = f"SELECT {FIX_COLUMNS} {HELD_FIXES_IN_WINDOW} ORDER BY f.ts LIMIT %(limit)s"


async def track(
    conn: AsyncConnection[Any], subject_id: int, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """The first ``limit`` fixes in [start, end), in time order."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(TRACK, {"subject": subject_id, "start": start, "end": end, "limit": limit})
    return await cur.fetchall()


async def thinned_track(
    conn: AsyncConnection[Any],
    subject_id: int,
    start: datetime,
    end: datetime,
    limit: int,
    max_points: int,
) -> list[dict[str, Any]]:
    """THINNED's rows: each fix kept, with ``n``, the number of fixes it was thinned from."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        THINNED,
        {
            "subject": subject_id,
            "start": start,
            "end": end,
            "limit": limit,
            "max_points": max_points,
        },
    )
    return await cur.fetchall()


# The mean radius of the Earth (a sphere: within 0.5 % of the WGS84 geodesic), for proximity.
EARTH_RADIUS_M = 6_371_008.8
# Subjects in scope with fixes within %(radius)s of (%(lat)s, %(lon)s) while held as offender:
# the bounding box (api.routes.proximity.bounding_box) first, then the haversine distance.
# Fixes first (MATERIALIZED: the planner would otherwise probe fixes_once once per held device,
# one heap page per fix of every monitored subject in the window): those in the box's grid cells
# in the window, through the (cell, ts) btree (migration 0026), or, for a box of more than
# MAX_GRID_CELLS cells, the window's heap pages through the BRIN index on ts (migration 0024);
# filtered by the box either way. The few fixes left are joined to whoever held their device at
# their time (docs/scaling.md).
_SEARCH = """
WITH hits AS MATERIALIZED (
    SELECT f.device_id, f.ts, {lat} AS lat, {lon} AS lon, {acc} AS acc,
           {received_at} AS received_at
    FROM fixes f
    WHERE f.ts >= %(start)s AND f.ts < %(end)s{cells}
      AND (f.lat BETWEEN %(lat_min)s AND %(lat_max)s
           OR f.lat_e7 BETWEEN %(lat_e7_min)s AND %(lat_e7_max)s)
      AND (%(lon_any)s OR f.lon BETWEEN %(lon_min)s AND %(lon_max)s
           OR f.lon BETWEEN %(lon_min2)s AND %(lon_max2)s
           OR f.lon_e7 BETWEEN %(lon_e7_min)s AND %(lon_e7_max)s
           OR f.lon_e7 BETWEEN %(lon_e7_min2)s AND %(lon_e7_max2)s)
      AND {lat} BETWEEN %(lat_min)s AND %(lat_max)s
      AND (%(lon_any)s OR {lon} BETWEEN %(lon_min)s AND %(lon_max)s
           OR {lon} BETWEEN %(lon_min2)s AND %(lon_max2)s)
), candidates AS (
    SELECT s.id AS subject_id, s.name, s.case_ref, s.region_id,
           f.device_id, f.ts, f.lat, f.lon, f.acc, f.received_at,
           2 * {radius} * asin(least(1.0, sqrt(
               power(sin(radians(f.lat - %(lat)s) / 2), 2)
             + cos(radians(%(lat)s)) * cos(radians(f.lat))
               * power(sin(radians(f.lon - %(lon)s) / 2), 2)))) AS distance_m
    FROM hits f
    JOIN device_assignments a ON a.device_id = f.device_id AND a.role = 'offender'
     AND f.ts >= greatest(lower(a.during), %(start)s)
     AND f.ts < least(upper(a.during), %(end)s)
    JOIN subjects s ON s.id = a.subject_id
    WHERE (%(regions)s::text[] IS NULL OR s.region_id = ANY(%(regions)s::text[]))
      AND (%(victims)s OR NOT s.victim)
), within AS (
    SELECT *, count(*) OVER (PARTITION BY subject_id) AS fixes_within,
           count(*) FILTER (WHERE received_at - ts > make_interval(secs => %(late_after)s))
               OVER (PARTITION BY subject_id) AS late_within
    FROM candidates WHERE distance_m <= %(radius)s
)
SELECT DISTINCT ON (subject_id) subject_id, name, case_ref, region_id, device_id, ts, lat, lon,
       acc, distance_m, fixes_within, received_at, late_within
FROM within ORDER BY subject_id, distance_m, ts
"""
_READ = {c: value(c, "f") for c in ("lat", "lon", "acc", "received_at")}
# The position as read, as the grid-cell index keys it (migration 0027).
FIX_CELL = f"fix_cell({_READ['lat']}, {_READ['lon']})"
SEARCH = _SEARCH.format(cells="", radius=EARTH_RADIUS_M, **_READ)
SEARCH_CELLS = _SEARCH.format(
    cells=f"\n      AND {FIX_CELL} = ANY(%(cells)s::integer[])", radius=EARTH_RADIUS_M, **_READ
)
# A 500 m box is 2-6 cells; 400 is a box of about 10 km at 55 degrees. Past that, the window's
# pages through the BRIN index are the cheaper read.
MAX_GRID_CELLS = 400
CELLS_PER_DEGREE = 100  # fix_cell's grid (migration 0026)


def grid_cells(box: Mapping[str, Any]) -> list[int] | None:
    """fix_cell's numbers (migration 0026) of every cell that meets the search box, computed as
    the SQL function computes them (the same IEEE multiplication and floor, so a fix in the box is
    in one of them); None when the box is unbounded in longitude or spans more than
    MAX_GRID_CELLS cells."""
    if box["lon_any"]:
        return None
    per = CELLS_PER_DEGREE
    rows = range(math.floor(box["lat_min"] * per), math.floor(box["lat_max"] * per) + 1)
    cols: list[int] = []
    for low, high in ((box["lon_min"], box["lon_max"]), (box["lon_min2"], box["lon_max2"])):
        if low <= high:
            cols.extend(range(math.floor(low * per), math.floor(high * per) + 1))
    if len(rows) * len(cols) > MAX_GRID_CELLS:
        return None
    return [(r + 90 * per) * (360 * per + 1) + (c + 180 * per) for r in rows for c in cols]


def box_parameters(box: Mapping[str, Any]) -> dict[str, Any]:
    """The search box's parameters for the proximity statement: its degrees, and the same box in
    the integer columns (10⁻⁷ degree, migration 0027) widened by one unit on each side, so that
    TimescaleDB's min/max of those columns can skip compressed batches; the exact test is on the
    position as read."""

    def low(degrees: float) -> int:
        return max(-(2**31), math.floor(degrees * 1e7) - 1)

    def high(degrees: float) -> int:
        return min(2**31 - 1, math.ceil(degrees * 1e7) + 1)

    return {
        **box,
        "lat_e7_min": low(box["lat_min"]),
        "lat_e7_max": high(box["lat_max"]),
        "lon_e7_min": low(box["lon_min"]),
        "lon_e7_max": high(box["lon_max"]),
        "lon_e7_min2": low(box["lon_min2"]),
        "lon_e7_max2": high(box["lon_max2"]),
    }


def search_statement(box: Mapping[str, Any]) -> tuple[str, list[int] | None]:
    """The proximity statement for a search box, and its cells when it goes by the grid."""
    cells = grid_cells(box)
    return (SEARCH if cells is None else SEARCH_CELLS), cells


async def near(
    conn: AsyncConnection[Any],
    *,
    lat: float,
    lon: float,
    radius_m: float,
    start: datetime,
    end: datetime,
    regions: Sequence[str] | None,
    victims: bool,
    late_after_s: float,
    box: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Per subject found, its closest fix (the earliest of equally close ones), with
    ``fixes_within`` and ``late_within`` (received more than ``late_after_s`` after its time)."""
    statement, cells = search_statement(box)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        statement,
        {
            "cells": cells,
            "lat": lat,
            "lon": lon,
            "radius": radius_m,
            "start": start,
            "end": end,
            "regions": regions,
            "late_after": late_after_s,
            "victims": victims,
            **box_parameters(box),
        },
    )
    return await cur.fetchall()


# -- synchronous: how far ingest has got, for the simulators and the benchmarks --------------


def count_stored(conn: psycopg.Connection[Any], device_ids: Sequence[str]) -> int:
    """How many fixes of ``device_ids`` are stored."""
    row = conn.execute(
        "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)", (list(device_ids),)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class StoredSpan:
    """Fixes stored, and the seconds between the first and last transaction that stored them."""

    stored: int
    span_s: float


def stored_like(conn: psycopg.Connection[Any], device_like: str) -> StoredSpan:
    """The fixes of the devices whose id is LIKE ``device_like`` (a load's or a benchmark's)."""
    cur = conn.cursor(row_factory=class_row(StoredSpan))
    cur.execute(
        f"SELECT count(*) AS stored, COALESCE(extract(epoch FROM max({_READ['received_at']})"
        f" - min({_READ['received_at']}))::float8, 0.0) AS span_s FROM fixes f"
        " WHERE device_id LIKE %s",
        (device_like,),
    )
    row = cur.fetchone()
    assert row is not None
    return row


@dataclass(frozen=True, slots=True)
class FixKey:
    device_id: str
    seq: int


def stored_among(
    conn: psycopg.Connection[Any], keys: Sequence[tuple[str, datetime, int]]
) -> list[FixKey]:
    """Which of ``keys`` (device, fix time, sequence: the unique key) are stored: one query for
    thousands of sampled fixes."""
    cur = conn.cursor(row_factory=class_row(FixKey))
    cur.execute(
        "SELECT f.device_id, f.seq FROM unnest(%s::text[], %s::timestamptz[],"
        " %s::bigint[]) AS k(d, t, s) JOIN fixes f"
        " ON f.device_id = k.d AND f.ts = k.t AND f.seq = k.s",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    )
    return cur.fetchall()


def devices_with_seq(
    conn: psycopg.Connection[Any], device_ids: Sequence[str], seq: int
) -> list[str]:
    """Those of ``device_ids`` that have a stored fix numbered ``seq``."""
    rows = conn.execute(
        "SELECT device_id FROM fixes WHERE device_id = ANY(%s) AND seq = %s",
        (list(device_ids), seq),
    ).fetchall()
    return [str(r[0]) for r in rows]
