"""The SQL of `tagwatch bench ingest`'s checks: after a drained backlog, were its fixes stored once,
and what did the workers that drained it count (their `ingest_counters` rows)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

STORED = """
SELECT count(*), count(DISTINCT (device_id, seq)) FROM fixes WHERE device_id LIKE %s
"""

WORKER_COUNTER = """
SELECT worker, coalesce(sum(value), 0)::float8 FROM ingest_counters
WHERE worker = ANY(%s) AND metric = %s GROUP BY worker
"""


@dataclass(frozen=True, slots=True)
class Stored:
    rows: int
    distinct: int  # distinct (device_id, seq)


def stored_fixes(conn: psycopg.Connection[Any], device_prefix: str) -> Stored:
    """The fixes rows of the devices whose ids start with ``device_prefix``, and how many distinct
    (device, seq) among them: equal, and equal to what was published, when each is stored once."""
    with conn.cursor() as cur:
        cur.execute(STORED, (f"{device_prefix}%",))
        row = cur.fetchone()
    assert row is not None
    return Stored(int(row[0]), int(row[1]))


def worker_counter(
    conn: psycopg.Connection[Any], workers: Sequence[str], metric: str
) -> dict[str, float]:
    """One counter (all its labels summed) of each of ``workers``; a worker without the row is 0."""
    with conn.cursor() as cur:
        cur.execute(WORKER_COUNTER, (list(workers), metric))
        found = {str(worker): float(value) for worker, value in cur.fetchall()}
    return {worker: found.get(worker, 0.0) for worker in workers}


RETIRE = """
UPDATE rule_state SET due_at = NULL
WHERE subject_id IN (SELECT id FROM subjects WHERE case_ref LIKE %s) AND due_at IS NOT NULL
"""


def retire_clock(conn: psycopg.Connection[Any], case_ref_prefix: str) -> int:
    """Take a finished run's subjects off the clock rules (no due time): they fall silent when
    their run ends, and a later run's clock would otherwise judge tens of thousands of them
    silent in the middle of its measurement."""
    with conn.transaction():
        return conn.execute(RETIRE, (f"{case_ref_prefix}%",)).rowcount


def settle(conn: psycopg.Connection[Any]) -> None:
    """Before a timed run (autocommit connection): vacuum and analyze what the runs churn (the
    rule state, the fixes), and a checkpoint where the role may, so a run does not pay for the
    previous run's autovacuum or checkpoint."""
    conn.execute("VACUUM (ANALYZE) rule_state")
    conn.execute("VACUUM (ANALYZE) fixes")
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


ACTIVE = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(query, %s)
FROM pg_stat_activity
WHERE usename = %s AND state = 'active' AND pid <> pg_backend_pid()
"""


def active_sessions(
    conn: psycopg.Connection[Any], user: str, width: int = 48
) -> list[tuple[str, str]]:
    """What the sessions of ``user`` are doing now: (wait event or CPU, the statement's start)."""
    with conn.cursor() as cur:
        cur.execute(ACTIVE, (width, user))
        return [(str(wait), " ".join(str(query).split())) for wait, query in cur.fetchall()]
