"""Migrations apply from an empty database, once, and the Timescale path where it exists."""

from __future__ import annotations

import psycopg
import pytest

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
