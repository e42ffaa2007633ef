"""Webhook subscriptions as the admin manages them, and as the dispatcher sends to them.

``scope`` is the admin's regions, or None for all: an admin sees the subscriptions whose
regions lie within theirs. The signing secret is stored sealed (store.webhook_secrets) and never
read back here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row

COLUMNS = (
    "id, name, url, regions, types, min_severity, active, created_at, refused_at, refused_reason,"
    " tracing_unit_id"
)
IN_SCOPE = "(%(scope)s::text[] IS NULL OR regions <@ %(scope)s::text[])"


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    name: str
    url: str
    regions: list[str]
    types: list[str]
    min_severity: str
    active: bool
    created_at: datetime
    refused_at: datetime | None
    refused_reason: str | None
    tracing_unit_id: int | None = None  # migration 0020: also gets alerts routed to the unit


async def webhook_in_scope(
    conn: AsyncConnection[Any], webhook_id: int, scope: Sequence[str] | None
) -> Webhook | None:
    cur = conn.cursor(row_factory=class_row(Webhook))
    await cur.execute(
        f"SELECT {COLUMNS} FROM webhook_subscriptions WHERE id = %(id)s AND {IN_SCOPE}",
        {"id": webhook_id, "scope": scope},
    )
    return await cur.fetchone()


async def list_webhooks(
    conn: AsyncConnection[Any],
    scope: Sequence[str] | None,
    active: bool | None,
    after_id: int,
    limit: int,
) -> list[Webhook]:
    cur = conn.cursor(row_factory=class_row(Webhook))
    await cur.execute(
        f"SELECT {COLUMNS} FROM webhook_subscriptions WHERE id > %(after)s AND {IN_SCOPE}"
        " AND (%(active)s::boolean IS NULL OR active = %(active)s)"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "scope": scope, "active": active, "limit": limit},
    )
    return await cur.fetchall()


async def create_webhook(
    conn: AsyncConnection[Any],
    *,
    name: str,
    url: str,
    secret_sealed: Any,
    regions: Sequence[str],
    types: Sequence[str],
    min_severity: str,
    active: bool,
    tracing_unit_id: int | None = None,
) -> Webhook:
    cur = conn.cursor(row_factory=class_row(Webhook))
    await cur.execute(
        "INSERT INTO webhook_subscriptions"
        " (name, url, secret_encrypted, regions, types, min_severity, active, tracing_unit_id)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
        (
            name,
            url,
            secret_sealed,
            list(regions),
            list(types),
            min_severity,
            active,
            tracing_unit_id,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_webhook(
    conn: AsyncConnection[Any],
    webhook_id: int,
    *,
    name: str | None,
    url: str | None,
    regions: Sequence[str] | None,
    types: Sequence[str] | None,
    min_severity: str | None,
    active: bool | None,
    tracing_unit_id: int | None = None,
    clear_tracing_unit: bool = False,
) -> Webhook:
    """None leaves a field as it is (``clear_tracing_unit`` removes the unit); a new url forgets
    why the old one was refused."""
    cur = conn.cursor(row_factory=class_row(Webhook))
    await cur.execute(
        "UPDATE webhook_subscriptions SET name = COALESCE(%(name)s, name),"
        " url = COALESCE(%(url)s, url), regions = COALESCE(%(regions)s::text[], regions),"
        " types = COALESCE(%(types)s::text[], types),"
        " min_severity = COALESCE(%(severity)s, min_severity),"
        " active = COALESCE(%(active)s, active),"
        " tracing_unit_id = CASE WHEN %(clear_unit)s THEN NULL"
        " ELSE COALESCE(%(unit)s, tracing_unit_id) END,"
        " refused_at = CASE WHEN %(url)s::text IS NULL THEN refused_at END,"
        " refused_reason = CASE WHEN %(url)s::text IS NULL THEN refused_reason END"
        f" WHERE id = %(id)s RETURNING {COLUMNS}",
        {
            "name": name,
            "url": url,
            "regions": None if regions is None else list(regions),
            "types": None if types is None else list(types),
            "severity": min_severity,
            "active": active,
            "unit": tracing_unit_id,
            "clear_unit": clear_tracing_unit,
            "id": webhook_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def deactivate(conn: AsyncConnection[Any], webhook_id: int) -> None:
    await conn.execute(
        "UPDATE webhook_subscriptions SET active = false WHERE id = %s", (webhook_id,)
    )


async def replace_secret(conn: AsyncConnection[Any], webhook_id: int, secret_sealed: Any) -> None:
    """The new sealed secret; the legacy plain column is cleared."""
    await conn.execute(
        "UPDATE webhook_subscriptions SET secret_encrypted = %s, secret = NULL WHERE id = %s",
        (secret_sealed, webhook_id),
    )


def add_plain(conn: psycopg.Connection[Any], name: str, url: str, secret: str) -> None:
    """A subscription to every alert with its secret in the legacy plain column, for benchmarks
    on throw-away databases (the dispatcher seals it on start: store.webhook_secrets)."""
    conn.execute(
        "INSERT INTO webhook_subscriptions (name, url, secret) VALUES (%s, %s, %s)",
        (name, url, secret),
    )


def deactivate_named(conn: psycopg.Connection[Any], name: str) -> None:
    """Stop delivering to the subscriptions called ``name`` (a benchmark's receiver is gone)."""
    conn.execute("UPDATE webhook_subscriptions SET active = false WHERE name = %s", (name,))


# ------------------------------------------------------------------ the dispatcher's side
#
# Synchronous, in the dispatcher's claim transaction (alerts.dispatcher).


@dataclass(frozen=True, slots=True)
class Destination:
    """A subscription as a send needs it; ``secret_encrypted`` is the sealed secret (None while
    only the legacy plaintext column holds it)."""

    id: int
    url: str
    secret_encrypted: str | None
    active: bool


def destinations(conn: psycopg.Connection[Any], ids: Sequence[int]) -> list[Destination]:
    """The subscriptions ``ids`` that exist (a deleted one is simply missing)."""
    cur = conn.cursor(row_factory=class_row(Destination))
    cur.execute(
        "SELECT id, url, secret_encrypted, active FROM webhook_subscriptions WHERE id = ANY(%s)",
        (list(ids),),
    )
    return cur.fetchall()


# Informational columns: a row another worker is updating is skipped rather than waited for.
_UNLESS_BUSY = "SELECT id FROM webhook_subscriptions WHERE id = %s FOR UPDATE SKIP LOCKED"


def mark_refused(
    conn: psycopg.Connection[Any], webhook_id: int, at: datetime, reason: str | None
) -> None:
    """Show the admin that the subscription's destination was refused, when and why."""
    conn.execute(
        "UPDATE webhook_subscriptions SET refused_at = %s, refused_reason = %s"
        f" WHERE id = ({_UNLESS_BUSY})",
        (at, reason, webhook_id),
    )


def clear_refused(conn: psycopg.Connection[Any], webhook_id: int) -> None:
    """A delivery to the subscription succeeded: forget an earlier refusal."""
    conn.execute(
        "UPDATE webhook_subscriptions SET refused_at = NULL, refused_reason = NULL"
        f" WHERE refused_at IS NOT NULL AND id = ({_UNLESS_BUSY})",
        (webhook_id,),
    )
