"""The SQL of `tagwatch bench store`: a synthetic national population written straight into the
schema (generate_series, one writer, in fix-time order as ingest writes it), the sizes, the plans,
and independent reference answers the benchmark checks the real queries against.

The population: subjects whose homes cluster around city centres across a country-sized box;
each wears a tag (a fix every 60 s) and a share of them also carries a phone (every 300 s, coarser
accuracy, sometimes wifi). By night a subject is at home (GPS noise only); by day it walks a
smooth loop around home (a Lissajous figure of its own size and phase), out in the morning and
back in the evening. One fix in a hundred is received late (a buffered upload). The homes are
kept in ``bench_homes`` (that database only) so the benchmark can pick places people were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import tenacity
from psycopg import sql

from tagwatch.store.fix_columns import as_read, value
from tagwatch.store.fixes import EARTH_RADIUS_M
from tagwatch.store.reports import CAGG

BENCH_REGIONS = 10
PHONE_EVERY = 5  # a phone fixes every 5th minute
# City centres in a country-sized box (lat 50.5..55.5, lon -4.5..1.5), like a national map.
CITIES = 40

POPULATION = """
INSERT INTO regions (id, name, timezone)
SELECT 'bench-' || r, 'Bench region ' || r, 'UTC' FROM generate_series(0, %(regions)s - 1) r
ON CONFLICT DO NOTHING;

CREATE TABLE bench_homes (
    n          integer PRIMARY KEY,
    subject_id bigint,
    tag_id     text NOT NULL,
    phone_id   text,
    region_id  text NOT NULL,
    lat        float8 NOT NULL,
    lon        float8 NOT NULL,
    range_m    float8 NOT NULL,
    phase1     float8 NOT NULL,
    phase2     float8 NOT NULL,
    period1_s  float8 NOT NULL,
    period2_s  float8 NOT NULL
);

INSERT INTO bench_homes (n, tag_id, phone_id, region_id, lat, lon, range_m,
                         phase1, phase2, period1_s, period2_s)
SELECT n, 'TAG' || lpad(n::text, 7, '0'),
       CASE WHEN n %% 5 = 0 THEN 'PH' || lpad(n::text, 7, '0') END,
       'bench-' || (c.k %% %(regions)s),
       c.lat + 5000.0 / 111320 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
       c.lon + 5000.0 / (111320 * cos(radians(c.lat)))
             * sqrt(-2 * ln(1 - random())) * sin(2 * pi() * random()),
       500 + random() * 7500, random() * 2 * pi(), random() * 2 * pi(),
       1800 + random() * 5400, 2400 + random() * 6000
FROM generate_series(1, %(subjects)s) n
CROSS JOIN LATERAL (
    SELECT k, 50.5 + 5 * ((k * 0.618034) - floor(k * 0.618034)) AS lat,
           -4.5 + 6 * ((k * 0.414214) - floor(k * 0.414214)) AS lon
    FROM (SELECT (n * 7919 + floor(random() * 3)::int) %% %(cities)s AS k) kk
) c;

INSERT INTO subjects (name, case_ref, region_id, timezone)
SELECT 'Bench subject ' || n, 'BENCH-' || n, region_id, 'UTC' FROM bench_homes ORDER BY n;

UPDATE bench_homes h SET subject_id = s.id FROM subjects s WHERE s.case_ref = 'BENCH-' || h.n;

INSERT INTO devices (id, kind, expected_interval_s)
SELECT tag_id, 'tag', 60 FROM bench_homes;
INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s)
SELECT phone_id, 'phone', 'owntracks/bench/' || phone_id, 300
FROM bench_homes WHERE phone_id IS NOT NULL;

INSERT INTO device_assignments (device_id, subject_id, role, during)
SELECT tag_id, subject_id, 'offender', tstzrange(%(start)s, NULL) FROM bench_homes
UNION ALL
SELECT phone_id, subject_id, 'offender', tstzrange(%(start)s, NULL) FROM bench_homes
WHERE phone_id IS NOT NULL;
"""

# Minutes [%(first)s, %(last)s] of the period, minute-major (as ingest writes them): every tag
# each minute, the phones every PHONE_EVERY minutes (staggered by subject). The values have the
# precision the devices send (simulators/devices.py: a tag's 7 decimals of lat/lon, accuracy to
# 0.1 m, speed to 0.01 m/s, heading to 0.1 degree while moving and none at rest, battery in
# whole percent; a phone's OwnTracks integers): full-precision floats (a new random heading
# every minute at rest too, a battery of 96.6667 %) were noise no device sends, which
# TimescaleDB's compression had to store (33.5 bytes a fix at 1M, 10 of them acc, hdg, batt).
# They are written in the compact form ingest writes for such values (store/fix_columns.compact,
# migration 0027: exact integers, the float columns NULL; the receive time as a delay in ms).
FIXES = """
INSERT INTO fixes (device_id, ts, seq, lat_e7, lon_e7, acc_cm, alt, spd_cms, hdg_cdeg, sats, batt,
                   src, received_at, received_ms)
SELECT d.device_id, d.ts, d.seq,
       (round((d.lat + (d.away * d.range_m * sin(d.w2) + d.noise_n) / 111320)::numeric, 7)
        * 10000000)::integer,
       (round((d.lon + (d.away * d.range_m * cos(d.w1) + d.noise_e)
               / (111320 * cos(radians(d.lat))))::numeric, 7) * 10000000)::integer,
       (d.acc::numeric * 100)::integer, NULL,
       (round((d.away * d.range_m * 2 * pi() / d.period1_s)::numeric, 2) * 100)::integer,
       CASE WHEN d.away > 0 THEN (round((random() * 360)::numeric, d.hdg_digits) * 100)::integer
       END,
       d.sats, round(100 - 80 * d.hour / 24)::real, d.src, NULL,
       round(1000 * CASE WHEN random() < 0.01 THEN 900 + random() * 2700
                         ELSE 1 + random() * 2 END)::integer
FROM generate_series(%(first)s::int, %(last)s::int) AS m(i)
CROSS JOIN LATERAL (
    SELECT x.*, %(start)s::timestamptz + make_interval(mins => m.i) AS ts,
           (m.i %% 1440) / 60.0 AS hour,
           CASE WHEN (m.i %% 1440) < 420 OR (m.i %% 1440) >= 1260 THEN 0.0
                ELSE power(sin(pi() * ((m.i %% 1440) - 420) / 840.0), 2) END AS away,
           2 * pi() * m.i * 60 / x.period1_s + x.phase1 AS w1,
           2 * pi() * m.i * 60 / x.period2_s + x.phase2 AS w2,
           x.acc_m * (random() - 0.5) AS noise_n, x.acc_m * (random() - 0.5) AS noise_e
    FROM (
        SELECT h.tag_id AS device_id, m.i::bigint AS seq, h.lat, h.lon, h.range_m, h.phase1,
               h.phase2, h.period1_s, h.period2_s, round((4 + random() * 8)::numeric, 1)::real
               AS acc, 10.0 AS acc_m, (6 + floor(random() * 7))::smallint AS sats, 'gps' AS src,
               1 AS hdg_digits
        FROM bench_homes h
        UNION ALL
        SELECT h.phone_id, m.i::bigint / %(phone_every)s, h.lat, h.lon, h.range_m, h.phase1,
               h.phase2, h.period1_s, h.period2_s, round(10 + random() * 30)::real, 30.0, NULL,
               CASE WHEN random() < 0.3 THEN 'wifi' ELSE 'gps' END, 0
        FROM bench_homes h
        WHERE h.phone_id IS NOT NULL AND (m.i + h.n) %% %(phone_every)s = 0
    ) x
) d
"""


def fill_population(
    conn: psycopg.Connection[Any], subjects: int, start: datetime, seed: float
) -> None:
    """Regions, subjects with homes, their tags and phones, assigned as offender from ``start``."""
    conn.execute("SELECT setseed(%s)", (seed,))
    params = {"regions": BENCH_REGIONS, "subjects": subjects, "cities": CITIES, "start": start}
    for statement in POPULATION.split(";\n"):
        if statement.strip():
            conn.execute(statement, params)


def fill_minutes(conn: psycopg.Connection[Any], start: datetime, first: int, last: int) -> int:
    """The fixes of minutes [first, last] after ``start``; how many were written."""
    cur = conn.execute(
        FIXES, {"start": start, "first": first, "last": last, "phone_every": PHONE_EVERY}
    )
    return cur.rowcount


def prepare_bulk_session(conn: psycopg.Connection[Any]) -> None:
    """A loader's session: no commit wait, room to sort for index builds, both cores."""
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")


@dataclass(frozen=True)
class IndexDef:
    name: str
    definition: str


def fix_indexes(conn: psycopg.Connection[Any]) -> list[IndexDef]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = 'fixes' ORDER BY indexname"
    ).fetchall()
    return [IndexDef(str(r[0]), str(r[1])) for r in rows]


def drop_indexes(conn: psycopg.Connection[Any], indexes: list[IndexDef]) -> None:
    """Before a bulk load: an index built once after it is faster to make and packed full."""
    for index in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index.name)))


def create_indexes(conn: psycopg.Connection[Any], indexes: list[IndexDef]) -> None:
    for index in indexes:
        conn.execute(index.definition)  # the catalogue's own definition, as it was


def vacuum_analyze(conn: psycopg.Connection[Any]) -> None:
    """Statistics for the planner and the visibility map for index-only counts (autocommit)."""
    conn.execute("VACUUM (ANALYZE) fixes")
    conn.execute("ANALYZE")


@dataclass(frozen=True)
class Size:
    rows: int
    table_bytes: int
    index_bytes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return self.table_bytes + sum(self.index_bytes.values())

    def per_fix(self, part: int) -> float:
        return part / self.rows if self.rows else 0.0


def fixes_size(conn: psycopg.Connection[Any]) -> Size:
    """Plain table: heap (with TOAST and maps) and each index, on disk."""
    rows = int(conn.execute("SELECT count(*) FROM fixes").fetchone()[0])  # type: ignore[index]
    table = int(
        conn.execute("SELECT pg_table_size('fixes')").fetchone()[0]  # type: ignore[index]
    )
    indexes = {
        str(name): int(size)
        for name, size in conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
            " WHERE indrelid = 'fixes'::regclass ORDER BY 1"
        ).fetchall()
    }
    return Size(rows, table, indexes)


def is_hypertable(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    if not row or not row[0]:
        return False
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'fixes')"
    ).fetchone()
    return bool(found and found[0])


def hypertable_size(conn: psycopg.Connection[Any]) -> Size:
    """A hypertable: its chunks' heaps (compressed or not, with TOAST) and indexes together."""
    rows = int(conn.execute("SELECT count(*) FROM fixes").fetchone()[0])  # type: ignore[index]
    table, toast, index = conn.execute(
        "SELECT COALESCE(sum(table_bytes), 0), COALESCE(sum(toast_bytes), 0),"
        " COALESCE(sum(index_bytes), 0) FROM hypertable_detailed_size('fixes')"
    ).fetchone() or (0, 0, 0)
    return Size(rows, int(table) + int(toast), {"all indexes": int(index)})


def compressed_column_bytes(conn: psycopg.Connection[Any], rows: int) -> dict[str, float]:
    """Bytes per fix that each column of ``fixes`` takes in the compressed chunks (its batches'
    datums as stored, TOAST-compressed where PostgreSQL did so), largest first: which columns
    keep the compressed figure above its target. Reads TimescaleDB's catalogue: the bench's own
    diagnostic, not a path of the service."""
    chunks = [
        str(r[0])
        for r in conn.execute(
            "SELECT format('%I.%I', z.schema_name, z.table_name)"
            " FROM _timescaledb_catalog.chunk c"
            " JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id"
            " JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id"
            " WHERE h.table_name = 'fixes'"
        ).fetchall()
    ]
    columns = [
        str(r[0])
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'fixes'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    ]
    totals = dict.fromkeys(columns, 0)
    for chunk in chunks:
        row = conn.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(
                    sql.SQL("COALESCE(sum(pg_column_size({})), 0)").format(sql.Identifier(c))
                    for c in columns
                ),
                sql.SQL(chunk),
            )
        ).fetchone()
        for column, size in zip(columns, row or (), strict=True):
            totals[column] += int(size)
    per_fix = {c: (v / rows if rows else 0.0) for c, v in totals.items()}
    return dict(sorted(per_fix.items(), key=lambda kv: -kv[1]))


REFRESH_RETRY_S = 2.0  # between tries while the policy's job refreshes the same window
REFRESH_PATIENCE_S = 1800.0  # a national store's refresh by the policy takes minutes


def refresh_report_aggregate(conn: psycopg.Connection[Any]) -> bool:
    """Materialize the quarter-hour aggregate of fixes (migration 0005) over everything stored,
    as its policy does every 15 minutes in service; False when there is none (plain
    PostgreSQL). A fill of history that nobody refreshed leaves the aggregate in real-time mode
    over every raw fix: a compliance report then aggregated the month's fixes on every read
    (3.2 s at 1M fixes, against 130-220 ms once refreshed)."""
    name = ".".join(CAGG)
    if conn.execute("SELECT to_regclass(%s) IS NULL", (name,)).fetchone() != (False,):
        return False
    # The aggregate's own policy (a background job every 15 minutes) may be refreshing when the
    # fill ends (it did after a 100M fill's ten minutes): TimescaleDB then refuses a second
    # refresh of the same window. Wait for the job and refresh what it left.
    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(psycopg.errors.LockNotAvailable),
        wait=tenacity.wait_fixed(REFRESH_RETRY_S),
        stop=tenacity.stop_after_delay(REFRESH_PATIENCE_S),
        reraise=True,
    ):
        with attempt:
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))
    return True


def compress_all(conn: psycopg.Connection[Any]) -> int:
    """Compress every chunk of fixes now (what the policy does after compress_after)."""
    rows = conn.execute(
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('fixes') c"
    ).fetchall()
    return len(rows)


def explain(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one of the API's statements with these parameters."""
    rows = conn.execute(
        sql.SQL("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}").format(sql.SQL(query)),
        params,
    ).fetchall()
    return "\n".join(str(r[0]) for r in rows)


@dataclass(frozen=True)
class Sample:
    """A stored fix of a bench subject: a place and a time somebody was."""

    subject_id: int
    device_id: str
    ts: datetime
    lat: float
    lon: float


def sample_fixes(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, count: int, seed: float
) -> list[Sample]:
    """``count`` tag fixes of random subjects at random times in [start, end)."""
    conn.execute("SELECT setseed(%s)", (seed,))
    rows = conn.execute(
        f"SELECT h.subject_id, f.device_id, f.ts, {value('lat', 'f')}, {value('lon', 'f')}"
        " FROM (SELECT (SELECT subject_id FROM bench_homes ORDER BY random() + g * 0 LIMIT 1)"
        "         AS subject_id, %(start)s::timestamptz + (%(end)s::timestamptz"
        "         - %(start)s::timestamptz) * random() AS at"
        "       FROM generate_series(1, %(count)s) g) pick"
        " JOIN bench_homes h ON h.subject_id = pick.subject_id"
        " CROSS JOIN LATERAL (SELECT * FROM fixes x WHERE x.device_id = h.tag_id"
        "   AND x.ts >= pick.at ORDER BY x.ts LIMIT 1) f",
        {"start": start, "end": end, "count": count},
    ).fetchall()
    return [Sample(int(r[0]), str(r[1]), r[2], float(r[3]), float(r[4])) for r in rows]


# Each bench device's fixes in [start, end), counted by one probe of (device_id, ts) per device.
# A join on ``device_id IN (tag, phone)`` let the planner hash the window instead, which on
# compressed chunks decompresses every device's batches: more than ten minutes at 100M fixes.
_PER_DEVICE_COUNT = (
    "CROSS JOIN LATERAL unnest(ARRAY[h.tag_id, h.phone_id]) AS d(device_id)"
    " CROSS JOIN LATERAL (SELECT count(*) AS fixes FROM fixes f"
    "   WHERE f.device_id = d.device_id"
    "   AND f.ts >= %(start)s AND f.ts < %(end)s) AS n"
)


def reference_track_count(
    conn: psycopg.Connection[Any], subject_id: int, start: datetime, end: datetime
) -> int:
    """The fixes of the subject's bench devices in [start, end), counted without the API's join
    (every bench device is held as offender for the whole period)."""
    row = conn.execute(
        f"SELECT coalesce(sum(n.fixes), 0) FROM bench_homes h {_PER_DEVICE_COUNT}"
        " WHERE h.subject_id = %(key)s",
        {"key": subject_id, "start": start, "end": end},
    ).fetchone()
    return int(row[0]) if row else 0


def reference_near(
    conn: psycopg.Connection[Any],
    lat: float,
    lon: float,
    radius_m: float,
    start: datetime,
    end: datetime,
) -> dict[int, int]:
    """Subject → fixes within the radius in [start, end), by a plain scan of the window with the
    haversine distance (no bounding box, no index hint): what proximity must answer."""
    lat_f, lon_f = value("lat", "f"), value("lon", "f")
    rows = conn.execute(
        "SELECT h.subject_id, count(*) FROM fixes f JOIN bench_homes h"
        " ON f.device_id IN (h.tag_id, h.phone_id)"
        " WHERE f.ts >= %(start)s AND f.ts < %(end)s"
        f" AND 2 * {EARTH_RADIUS_M} * asin(least(1.0, sqrt("
        f" power(sin(radians({lat_f} - %(lat)s) / 2), 2)"
        f" + cos(radians(%(lat)s)) * cos(radians({lat_f}))"
        f" * power(sin(radians({lon_f} - %(lon)s) / 2), 2)))) <= %(radius)s"
        " GROUP BY h.subject_id",
        {"lat": lat, "lon": lon, "radius": radius_m, "start": start, "end": end},
    ).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def reference_region_fixes(
    conn: psycopg.Connection[Any], region: str, start: datetime, end: datetime
) -> int:
    """Fixes of the region's bench subjects in [start, end): the compliance report's figure."""
    row = conn.execute(
        f"SELECT coalesce(sum(n.fixes), 0) FROM bench_homes h {_PER_DEVICE_COUNT}"
        " WHERE h.region_id = %(key)s",
        {"key": region, "start": start, "end": end},
    ).fetchone()
    return int(row[0]) if row else 0


def create_database(admin: psycopg.Connection[Any], name: str) -> None:
    """A fresh database (autocommit connection to the server's maintenance database)."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# `bench store`'s row-model diagnostic (TimescaleDB only): what the compressed bytes per fix would
# be if `fixes` stored its numbers as scaled integers, measured on a sample of the bench's own
# devices copied into scratch hypertables with the same chunking, segment-by and order-by.
# Not a path of the service: the table the service writes is `fixes`, unchanged. Each layout
# maps the columns of `fixes` to an expression; `exact` is the condition that the stored integer
# gives the sent value back (the contract's "nothing silently changed").
ROW_MODEL_SCHEMA = "bench_row_model"
_AS_STORED = {
    "lat": ("float8", "lat"),
    "lon": ("float8", "lon"),
    "acc": ("real", "acc"),
    "spd": ("real", "spd"),
    "hdg": ("real", "hdg"),
    "received_at": ("timestamptz", "received_at"),
}
_INT_COORDINATES = {
    **_AS_STORED,
    "lat": ("integer", "round(lat * 1e7)::integer"),
    "lon": ("integer", "round(lon * 1e7)::integer"),
}
_RECEIVE_DELAY = {
    **_INT_COORDINATES,
    "received_at": ("integer", "round(extract(epoch FROM received_at - ts) * 1000)::integer"),
}
_ALL_INTEGERS = {
    **_RECEIVE_DELAY,
    "acc": ("integer", "round(acc * 100)::integer"),
    "spd": ("integer", "round(spd * 100)::integer"),
    "hdg": ("integer", "round(hdg * 100)::integer"),
}
ROW_MODELS: dict[str, dict[str, tuple[str, str]]] = {
    "as stored (float8 lat/lon, real acc/spd/hdg, timestamptz received_at)": _AS_STORED,
    "lat/lon as integers of 1e-7 degree": _INT_COORDINATES,
    "  + received_at as a delay in ms": _RECEIVE_DELAY,
    "  + acc, spd, hdg as integers of 0.01": _ALL_INTEGERS,
}
# Per column, the check that the stored integer gives the value back exactly (None: not scaled).
_EXACT = {
    "lat": "lat = round(lat * 1e7) / 1e7::float8",
    "lon": "lon = round(lon * 1e7) / 1e7::float8",
    "acc": "acc IS NULL OR acc = (round(acc * 100) / 100::float8)::real",
    "spd": "spd IS NULL OR spd = (round(spd * 100) / 100::float8)::real",
    "hdg": "hdg IS NULL OR hdg = (round(hdg * 100) / 100::float8)::real",
}


def _has_sparse_minmax(conn: psycopg.Connection[Any]) -> bool:
    """Whether fixes has migration timescale_0003's min/max summaries of lat and lon (TimescaleDB
    2.18 and later), so that each layout carries the same metadata as the table it stands for."""
    view = "timescaledb_information.hypertable_columnstore_settings"
    if conn.execute("SELECT to_regclass(%s) IS NULL", (view,)).fetchone() != (False,):
        return False
    row = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE hypertable = 'fixes'::regclass"
            ' AND index @> \'[{{"type": "minmax", "column": "lat"}}]\')'
        ).format(sql.SQL(view))
    ).fetchone()
    return bool(row and row[0])


# The sampled devices' fixes as the service reads them (whichever columns hold the numbers).
_SAMPLED = sql.SQL(f"(SELECT {as_read('x')} FROM fixes x WHERE x.device_id = ANY(%s)) AS s")


@dataclass(frozen=True)
class RowModel:
    name: str
    rows: int
    bytes_per_fix: float
    inexact: int  # sampled fixes whose scaled columns would not give the sent values back


def row_model_bytes(conn: psycopg.Connection[Any], subjects: int) -> list[RowModel]:
    """Each layout of ROW_MODELS on the fixes of the first ``subjects`` bench subjects' devices
    (tag and phone): compressed bytes per fix (heap, TOAST and indexes of the chunks) and how
    many sampled fixes it would not store exactly. Works in a scratch schema it drops again."""
    devices = [
        str(r[0])
        for r in conn.execute(
            "SELECT d FROM (SELECT n, tag_id, phone_id FROM bench_homes ORDER BY n LIMIT %s) h,"
            " unnest(ARRAY[tag_id, phone_id]) d WHERE d IS NOT NULL",
            (subjects,),
        ).fetchall()
    ]
    schema = sql.Identifier(ROW_MODEL_SCHEMA)
    out: list[RowModel] = []
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    try:
        for number, (name, layout) in enumerate(ROW_MODELS.items()):
            out.append(_row_model(conn, name, layout, f"layout_{number}", devices))
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    return out


def _row_model(
    conn: psycopg.Connection[Any],
    name: str,
    layout: dict[str, tuple[str, str]],
    table_name: str,
    devices: list[str],
) -> RowModel:
    table = sql.Identifier(ROW_MODEL_SCHEMA, table_name)
    qualified = f"{ROW_MODEL_SCHEMA}.{table_name}"
    columns = [
        ("device_id", "text", "device_id"),
        ("ts", "timestamptz", "ts"),
        ("seq", "bigint", "seq"),
        ("lat", *layout["lat"]),
        ("lon", *layout["lon"]),
        ("acc", *layout["acc"]),
        ("alt", "real", "alt"),
        ("spd", *layout["spd"]),
        ("hdg", *layout["hdg"]),
        ("sats", "smallint", "sats"),
        ("batt", "real", "batt"),
        ("src", "text", "src"),
        ("received_at", *layout["received_at"]),
    ]
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(
            table,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t, _ in columns
            ),
        )
    )
    conn.execute(
        "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => INTERVAL '1 day')",
        (qualified,),
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby ="
            " 'device_id', timescaledb.compress_orderby = 'ts, seq')"
        ).format(table)
    )
    if _has_sparse_minmax(conn):  # as migration timescale_0003 gives fixes: proximity needs it
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.sparse_index = 'minmax(lat), minmax(lon)')"
            ).format(table)
        )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM {} ORDER BY ts").format(
            table, sql.SQL(", ").join(sql.SQL(expr) for _, _, expr in columns), _SAMPLED
        ),
        (devices,),
    )
    scaled = [_EXACT[c] for c, kind, _ in columns if c in _EXACT and kind == "integer"]
    inexact = 0
    if scaled:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE NOT ({})").format(
                _SAMPLED, sql.SQL(" AND ").join(sql.SQL(f"({s})") for s in scaled)
            ),
            (devices,),
        ).fetchone()
        inexact = int(row[0]) if row else 0
    conn.execute("SELECT compress_chunk(c) FROM show_chunks(%s::regclass) c", (qualified,))
    rows, size = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {}), (SELECT COALESCE(sum(table_bytes), 0)"
            " + COALESCE(sum(toast_bytes), 0) + COALESCE(sum(index_bytes), 0)"
            " FROM hypertable_detailed_size(%s::regclass))"
        ).format(table),
        (qualified,),
    ).fetchone() or (0, 0)
    return RowModel(name, int(rows), int(size) / int(rows) if rows else 0.0, inexact)
