"""The audit log: its appends, and the reads that check its chain and list it (the chain
itself is kept by the database: see store/migrations/0004_security.sql)."""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

APPEND = (
    "INSERT INTO audit_log (username, role, action, subject_id, detail) "
    "SELECT %(username)s::text, %(role)s::text, %(action)s::text, %(subject)s::bigint,"
    " %(detail)s::jsonb || CASE WHEN EXISTS (SELECT 1 FROM subjects"
    " WHERE id = %(subject)s::bigint AND victim) THEN '{\"victim\": true}'::jsonb"
    " ELSE '{}'::jsonb END"
)


def _params(
    username: str, role: str, action: str, subject_id: int | None, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "username": username,
        "role": role,
        "action": action,
        "subject": subject_id,
        "detail": json.dumps(detail, default=str),
    }


def append_sync(
    conn: psycopg.Connection[Any],
    username: str,
    role: str,
    action: str,
    subject_id: int | None,
    detail: dict[str, Any],
) -> None:
    """`append` for synchronous callers (operator actions on the action pool, the CLI)."""
    conn.execute(APPEND, _params(username, role, action, subject_id, detail))


async def append(
    conn: AsyncConnection[Any],
    username: str,
    role: str,
    action: str,
    subject_id: int | None,
    detail: dict[str, Any],
) -> None:
    """One row, in the caller's transaction. A row about a victim subject gets ``"victim":
    true`` in its detail here, in SQL, whatever the caller wrote."""
    await conn.execute(APPEND, _params(username, role, action, subject_id, detail))


# -- synchronous: `tagwatch audit verify` and `audit list` ---------------------------------


@dataclass(frozen=True, slots=True)
class ChainHead:
    last_seq: int
    last_hash: str


@dataclass(frozen=True, slots=True)
class ChainRow:
    """A chained row as its hash covers it (``detail_text`` is ``detail::text``, the bytes the
    database hashed, not the JSON re-serialised)."""

    seq: int
    id: int
    at: datetime
    username: str
    role: str
    action: str
    subject_id: int | None
    detail_text: str
    prev_hash: str | None
    hash: str | None


def one_snapshot(conn: psycopg.Connection[Any]) -> None:
    """The transaction just begun reads one snapshot throughout, and writes nothing, so the
    head and the rows a verification compares are of the same moment."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def chain_head(conn: psycopg.Connection[Any]) -> ChainHead | None:
    cur = conn.cursor(row_factory=class_row(ChainHead))
    cur.execute("SELECT last_seq, last_hash FROM audit_chain_head WHERE singleton")
    return cur.fetchone()


def first_unchained(conn: psycopg.Connection[Any]) -> int | None:
    """The lowest id of a row without a seq (one the chain trigger never saw), if any."""
    row = conn.execute("SELECT id FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT 1").fetchone()
    return None if row is None else int(row[0])


def chain_rows(conn: psycopg.Connection[Any], batch: int) -> Generator[ChainRow, None, None]:
    """Every chained row in seq order, ``batch`` at a time from a server-side cursor (the log
    may not fit in memory); run it inside a transaction."""
    with conn.cursor(name="audit_verify", row_factory=class_row(ChainRow)) as cursor:
        cursor.itersize = batch
        cursor.execute(
            "SELECT seq, id, at, username, role, action, subject_id, detail::text AS detail_text,"
            " prev_hash, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq"
        )
        yield from cursor


def recent(
    conn: psycopg.Connection[Any],
    limit: int,
    subject_id: int | None,
    username: str | None,
    action: str | None,
) -> list[dict[str, Any]]:
    """The latest rows, newest first (rows the chain never saw, without a seq, before all)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT seq, id, at, username, role, action, subject_id, detail FROM audit_log"
        " WHERE (%(subject)s::bigint IS NULL OR subject_id = %(subject)s)"
        " AND (%(username)s::text IS NULL OR username = %(username)s)"
        " AND (%(action)s::text IS NULL OR action = %(action)s)"
        " ORDER BY seq DESC NULLS FIRST, id DESC LIMIT %(limit)s",
        {"subject": subject_id, "username": username, "action": action, "limit": limit},
    )
    return cur.fetchall()
