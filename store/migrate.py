"""Numbered SQL migrations, applied in order, each once, recorded in `schema_migrations`.

Plain files (`0001_name.sql`) always apply. Files named `timescale_0001_name.sql` apply only when
the timescaledb extension can be created, so one schema serves plain PostgreSQL and TimescaleDB;
if the extension is installed later, the next `tagwatch migrate` adds the hypertables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tagwatch.store.roles import apply_grants

MIGRATIONS = Path(__file__).parent / "migrations"
INTERVAL = re.compile(r"^\d+ (seconds?|minutes?|hours?|days?|weeks?|months?|years?)$")
LOCK_KEY = 0x7467_6D69  # one migrator at a time, whatever process runs it


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    timescale: bool


def discover() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        timescale = path.name.startswith("timescale_")
        found.append(Migration(version=path.stem, path=path, timescale=timescale))
    # Plain migrations first, in number order; Timescale ones after, in theirs.
    return sorted(found, key=lambda m: (m.timescale, m.version))


def timescale_possible(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        return False
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    return preload is not None and "timescaledb" in str(preload[0])


def applied(conn: psycopg.Connection) -> set[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def ensure_database(conn: psycopg.Connection[Any], name: str) -> bool:
    """Create the database ``name`` on the server ``conn`` (autocommit) is connected to, unless
    it exists; True if it was created."""
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        return False
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def analyze(conn: psycopg.Connection[Any]) -> None:
    """Fresh statistics for the planner (after a bulk COPY it would guess, and seq-scan)."""
    conn.execute("ANALYZE")


def migrate(
    database_url: str, compress_after: str = "7 days", retain_fixes_for: str = "3650 days"
) -> list[str]:
    """Apply what is missing; return the versions applied now."""
    for value in (compress_after, retain_fixes_for):
        if not INTERVAL.match(value):
            msg = f"not an interval like '7 days': {value!r}"
            raise ValueError(msg)
    done: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            have = applied(conn)
            timescale = timescale_possible(conn)
            for migration in discover():
                if migration.version in have or (migration.timescale and not timescale):
                    continue
                sql = migration.path.read_text()
                if migration.timescale:
                    sql = sql.format(
                        compress_after=compress_after, retain_fixes_for=retain_fixes_for
                    )
                with conn.transaction():
                    conn.execute(sql)  # our own files, not user input
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,)
                    )
                done.append(migration.version)
            with conn.transaction():
                apply_grants(conn)  # every table, old and new, gets each process role's rights
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return done
