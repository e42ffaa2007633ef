"""What `tagwatch chaos db-failover` reads back to judge a failover: nothing lost, nothing twice.

Read-only counts over the run's own devices and subjects (the run's database is thrown away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tagwatch.store.fix_columns import value

_RECEIVED = value("received_at", "f")


@dataclass(frozen=True, slots=True)
class StoredOnce:
    rows: int  # fix rows of the run's devices
    distinct: int  # distinct (device, seq): each published fix counted once however often stored


def fixes_stored_once(conn: psycopg.Connection[Any], device_like: str) -> StoredOnce:
    row = conn.execute(
        "SELECT count(*), count(DISTINCT (device_id, seq)) FROM fixes WHERE device_id LIKE %s",
        (device_like,),
    ).fetchone()
    return StoredOnce(int(row[0]), int(row[1])) if row else StoredOnce(0, 0)


def first_write_after(
    conn: psycopg.Connection[Any], device_like: str, after: datetime
) -> datetime | None:
    """When the first write after ``after`` stored one of these fixes (the receive time is the
    writer's clock as it writes the batch, to the millisecond: store/fix_columns)."""
    row = conn.execute(
        f"SELECT min({_RECEIVED}) FROM fixes f WHERE device_id LIKE %s AND {_RECEIVED} > %s",
        (device_like, after),
    ).fetchone()
    return row[0] if row else None


def last_write_before(
    conn: psycopg.Connection[Any], device_like: str, before: datetime
) -> datetime | None:
    row = conn.execute(
        f"SELECT max({_RECEIVED}) FROM fixes f WHERE device_id LIKE %s AND {_RECEIVED} <= %s",
        (device_like, before),
    ).fetchone()
    return row[0] if row else None


def alert_count(conn: psycopg.Connection[Any], subject_ids: Sequence[int]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM alerts WHERE subject_id = ANY(%s)", (list(subject_ids),)
    ).fetchone()
    return int(row[0]) if row else 0


def duplicate_alerts(conn: psycopg.Connection[Any], subject_ids: Sequence[int]) -> int:
    """Alerts that repeat another: the same subject and type opened at the same time, or two
    episodes of one subject and type open at once (one zone per subject in the run)."""
    row = conn.execute(
        "SELECT count(DISTINCT b.id) FROM alerts a JOIN alerts b"
        " ON b.subject_id = a.subject_id AND b.type = a.type AND b.id > a.id"
        " AND (b.opened_at = a.opened_at"
        "  OR tstzrange(a.opened_at, coalesce(a.cleared_at, 'infinity'))"
        "   && tstzrange(b.opened_at, coalesce(b.cleared_at, 'infinity')))"
        " WHERE a.subject_id = ANY(%s)",
        (list(subject_ids),),
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Notification:
    outbox_id: int
    status: str  # of its delivery on the channel: pending, delivered, failed


def notifications(
    conn: psycopg.Connection[Any], subject_ids: Sequence[int], channel: str
) -> list[Notification]:
    """Every outbox row about these subjects' alerts with a delivery on ``channel``."""
    rows = conn.execute(
        "SELECT o.id, d.status FROM outbox o"
        " JOIN alerts a ON a.id = o.alert_id"
        " JOIN deliveries d ON d.outbox_id = o.id AND d.channel = %s"
        " WHERE a.subject_id = ANY(%s) ORDER BY o.id",
        (channel, list(subject_ids)),
    ).fetchall()
    return [Notification(int(r[0]), str(r[1])) for r in rows]


def webhook_id_named(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM webhook_subscriptions WHERE name = %s ORDER BY id LIMIT 1", (name,)
    ).fetchone()
    return int(row[0]) if row else None
