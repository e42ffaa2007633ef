"""The notification deliveries the dispatcher sends: one ``deliveries`` row per outbox row and
channel, every attempt in ``delivery_attempts`` (migration 0003; the rows are written with the
alert, by ``engine_repository.enqueue``).

Claiming locks the due rows ``FOR UPDATE OF d SKIP LOCKED`` and the dispatcher keeps the locks
while it sends, in the claim's transaction: several workers and processes never send one row at
once, and a dispatcher that dies releases its rows for the next claim. The outcome is recorded
in that same transaction, after the send, so a row is ``delivered`` only once the receiver
confirmed it. Times of outcomes are ``clock_timestamp()`` (the moment of recording, not the
claim's transaction start: a slow batch must not schedule its retries in the past).

Waking up: migration 0003 notifies ``CHANNEL`` at the commit of every insert into deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import class_row

CHANNEL: Final = "tagwatch_deliveries"  # migration 0003's pg_notify


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed delivery: which outbox row on which channel, the attempts so far, and what
    sending it needs (the outbox row's region and payload)."""

    outbox_id: int
    channel: str
    attempts: int
    region_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One send's outcome, as ``delivery_attempts`` keeps it."""

    outbox_id: int
    channel: str
    at: datetime
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed delivery: ``pending`` again after ``delay_s``, or ``failed`` for good."""

    outbox_id: int
    channel: str
    status: str  # "pending" or "failed"
    error: str | None
    delay_s: float


def claim_due(conn: psycopg.Connection[Any], limit: int) -> list[Due]:
    """Up to ``limit`` pending deliveries whose time has come, earliest first, locked for this
    transaction; rows another transaction holds are skipped, not waited for."""
    cur = conn.cursor(row_factory=class_row(Due))
    cur.execute(
        "SELECT d.outbox_id, d.channel, d.attempts, o.region_id, o.payload"
        " FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
        " WHERE d.status = 'pending' AND d.next_attempt <= now()"
        " ORDER BY d.next_attempt, d.outbox_id LIMIT %s FOR UPDATE OF d SKIP LOCKED",
        (limit,),
    )
    return cur.fetchall()


def record_attempts(conn: psycopg.Connection[Any], attempts: Sequence[AttemptRecord]) -> None:
    """Every attempt, successful or not."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery_attempts"
            " (outbox_id, channel, at, ok, status_code, error, duration_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (a.outbox_id, a.channel, a.at, a.ok, a.status_code, a.error, a.duration_ms)
                for a in attempts
            ],
        )


def mark_delivered(conn: psycopg.Connection[Any], keys: Sequence[tuple[int, str]]) -> None:
    """The receivers confirmed these (outbox id, channel) deliveries."""
    if not keys:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,"
            " delivered_at = clock_timestamp(), last_error = NULL"
            " WHERE outbox_id = %s AND channel = %s",
            list(keys),
        )


def mark_failed(conn: psycopg.Connection[Any], retries: Sequence[Retry]) -> None:
    """Count a failed attempt on each and set its status and next attempt."""
    if not retries:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deliveries SET status = %s, attempts = attempts + 1,"
            " last_error = %s,"
            " next_attempt = clock_timestamp() + make_interval(secs => %s)"
            " WHERE outbox_id = %s AND channel = %s",
            [(r.status, r.error, r.delay_s, r.outbox_id, r.channel) for r in retries],
        )


def seconds_to_next_retry(conn: psycopg.Connection[Any]) -> float | None:
    """Seconds until the earliest pending delivery scheduled in the future comes due; None when
    there is none."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_attempt) - clock_timestamp())::float8"
        " FROM deliveries WHERE status = 'pending' AND next_attempt > clock_timestamp()"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def listen(conn: psycopg.Connection[Any]) -> None:
    """Subscribe ``conn`` (autocommit: a LISTEN takes effect at commit) to the notification sent
    when deliveries are committed; read them with ``conn.notifies()``."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
