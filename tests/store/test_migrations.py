"""Migrations apply from an empty database, once, and the Timescale path where it exists."""

from __future__ import annotations

import shutil

import psycopg
import pytest

import tagwatch.store.migrate as migrate_module
from tagwatch.store.fix_columns import as_read
from tagwatch.store.migrate import discover, migrate, timescale_possible
from tests.support import fresh_id

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(settings):
    name = fresh_id("empty").replace("-", "_")
    admin_url = settings.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_migrations_apply_from_empty_and_only_once(empty_database):
    first = migrate(empty_database)
    plain = [m.version for m in discover() if not m.timescale]
    assert first[: len(plain)] == plain
    assert migrate(empty_database) == []
    with psycopg.connect(empty_database) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        recorded = [
            r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        ]
    assert {
        "regions",
        "subjects",
        "devices",
        "device_assignments",
        "fixes",
        "device_events",
        "device_status",
        "dead_letters",
        "alerts",
        "users",
        "audit_log",
    } <= tables
    assert set(plain) <= set(recorded)


def test_fix_dedup_key_treats_missing_seq_as_one_fix(empty_database):
    migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES ('d1', 'tag')")
        for _ in range(2):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) "
                "VALUES ('d1', '2026-01-01T00:00:00Z', 1, 2, 3) ON CONFLICT DO NOTHING"
            )
        assert conn.execute("SELECT count(*) FROM fixes").fetchone()[0] == 1


def test_timescale_path(empty_database):
    with psycopg.connect(empty_database) as conn:
        if not timescale_possible(conn):
            pytest.skip(
                "timescaledb extension not installed/preloaded here (it is not in this "
                "machine's package registries); the plain-PostgreSQL schema is tested instead"
            )
    applied = migrate(empty_database)
    assert any(v.startswith("timescale_") for v in applied)
    with psycopg.connect(empty_database) as conn:
        hypertables = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        jobs = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE hypertable_name = 'fixes'"
        ).fetchone()[0]
    assert {"fixes", "device_events"} <= hypertables
    assert jobs >= 2  # compression and retention


def test_a_store_from_before_0027_upgrades_and_reads_the_same(
    empty_database, tmp_path, monkeypatch
):
    """A store written as floats (and, with TimescaleDB, compressed) before migration 0027: after
    the upgrade its fixes read the same through the readers' SQL; the grid-cell index keys the
    position as read (none keys the old expression); compressed chunks were compressed again with
    min/max summaries of the integer columns (timescale_0005); a fix with no position is refused."""
    before = tmp_path / "before"
    before.mkdir()
    for path in migrate_module.MIGRATIONS.glob("*.sql"):
        if path.stem not in ("0027_fixes_compact_numbers", "timescale_0005_fixes_compact_minmax"):
            shutil.copy(path, before / path.name)
    with monkeypatch.context() as patch:
        patch.setattr(migrate_module, "MIGRATIONS", before)
        migrate(empty_database)
    sent = [
        (f"2026-01-0{d}T00:00:0{i}Z", 51.1234567 + i, -0.1 * i, 7.5) for d in (1, 2) for i in (1, 2)
    ]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES ('old1', 'tag')")
        for ts, lat, lon, acc in sent:
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon, acc) VALUES ('old1', %s, %s, %s, %s)",
                (ts, lat, lon, acc),
            )
        timescale = (
            timescale_possible(conn)
            and conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()[0]
        )
        if timescale:
            conn.execute(
                "SELECT compress_chunk(c) FROM show_chunks('fixes', older_than => now()) c"
            )
    assert migrate(empty_database) == [
        m.version
        for m in discover()
        if m.version in ("0027_fixes_compact_numbers", "timescale_0005_fixes_compact_minmax")
        and (timescale or not m.timescale)
    ]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        read = conn.execute(
            f"SELECT lat, lon, acc FROM (SELECT {as_read('x')} FROM fixes x) f ORDER BY ts"
        ).fetchall()
        assert read == [(lat, lon, acc) for _, lat, lon, acc in sent]
        definitions = [
            r[0]
            for r in conn.execute(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                " WHERE indrelid = 'fixes'::regclass"
            )
        ]
        assert not any("fix_cell(lat, lon)" in d for d in definitions), definitions
        if not timescale:
            assert any("fix_cell(COALESCE(lat" in d for d in definitions), definitions
        else:
            summaries = conn.execute(
                "SELECT count(*) FROM _timescaledb_catalog.chunk c"
                " JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id"
                " JOIN pg_attribute a ON a.attrelid = format('%I.%I', z.schema_name,"
                "   z.table_name)::regclass AND a.attname LIKE '%min%lat_e7%'"
                " JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id"
                " WHERE h.table_name = 'fixes'"
            ).fetchone()[0]
            assert summaries >= 1
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, lat, lon_e7) VALUES ('old1', now(), NULL, 1)"
            )
