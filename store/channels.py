"""Human notification channels (Apprise URLs, migration 0021), as the admin manages them and as
the dispatcher sends to them, and the facts a human-readable message needs about an alert.

``scope`` is the admin's regions, or None for all, as for webhooks. The Apprise URL is stored
sealed (store.webhook_secrets) and only the dispatcher opens it; the API shows ``url_shown``,
Apprise's own privacy form of it.
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
    "id, name, url_shown, scheme, regions, types, min_severity, role, escalation, active,"
    " created_at, refused_at, refused_reason"
)
IN_SCOPE = "(%(scope)s::text[] IS NULL OR regions <@ %(scope)s::text[])"


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    name: str
    url_shown: str
    scheme: str
    regions: list[str]
    types: list[str]
    min_severity: str
    role: str
    escalation: bool
    active: bool
    created_at: datetime
    refused_at: datetime | None
    refused_reason: str | None


async def channel_in_scope(
    conn: AsyncConnection[Any], channel_id: int, scope: Sequence[str] | None
) -> Channel | None:
    cur = conn.cursor(row_factory=class_row(Channel))
    await cur.execute(
        f"SELECT {COLUMNS} FROM notification_channels WHERE id = %(id)s AND {IN_SCOPE}",
        {"id": channel_id, "scope": scope},
    )
    return await cur.fetchone()


async def list_channels(
    conn: AsyncConnection[Any],
    scope: Sequence[str] | None,
    active: bool | None,
    after_id: int,
    limit: int,
) -> list[Channel]:
    cur = conn.cursor(row_factory=class_row(Channel))
    await cur.execute(
        f"SELECT {COLUMNS} FROM notification_channels WHERE id > %(after)s AND {IN_SCOPE}"
        " AND (%(active)s::boolean IS NULL OR active = %(active)s)"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "scope": scope, "active": active, "limit": limit},
    )
    return await cur.fetchall()


async def create_channel(
    conn: AsyncConnection[Any],
    *,
    name: str,
    url_sealed: str,
    url_shown: str,
    scheme: str,
    regions: Sequence[str],
    types: Sequence[str],
    min_severity: str,
    role: str,
    escalation: bool,
    active: bool,
) -> Channel:
    cur = conn.cursor(row_factory=class_row(Channel))
    await cur.execute(
        "INSERT INTO notification_channels (name, url_sealed, url_shown, scheme, regions, types,"
        " min_severity, role, escalation, active)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
        (
            name,
            url_sealed,
            url_shown,
            scheme,
            list(regions),
            list(types),
            min_severity,
            role,
            escalation,
            active,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_channel(
    conn: AsyncConnection[Any],
    channel_id: int,
    *,
    name: str | None,
    url: tuple[str, str, str] | None,
    regions: Sequence[str] | None,
    types: Sequence[str] | None,
    min_severity: str | None,
    role: str | None,
    escalation: bool | None,
    active: bool | None,
) -> Channel:
    """None leaves a field as it is; ``url`` is (sealed, shown, scheme), and a new one forgets
    why the old one was refused."""
    sealed, shown, scheme = url if url is not None else (None, None, None)
    cur = conn.cursor(row_factory=class_row(Channel))
    await cur.execute(
        "UPDATE notification_channels SET name = COALESCE(%(name)s, name),"
        " url_sealed = COALESCE(%(sealed)s, url_sealed),"
        " url_shown = COALESCE(%(shown)s, url_shown), scheme = COALESCE(%(scheme)s, scheme),"
        " regions = COALESCE(%(regions)s::text[], regions),"
        " types = COALESCE(%(types)s::text[], types),"
        " min_severity = COALESCE(%(severity)s, min_severity), role = COALESCE(%(role)s, role),"
        " escalation = COALESCE(%(escalation)s, escalation),"
        " active = COALESCE(%(active)s, active),"
        " refused_at = CASE WHEN %(sealed)s::text IS NULL THEN refused_at END,"
        " refused_reason = CASE WHEN %(sealed)s::text IS NULL THEN refused_reason END"
        f" WHERE id = %(id)s RETURNING {COLUMNS}",
        {
            "name": name,
            "sealed": sealed,
            "shown": shown,
            "scheme": scheme,
            "regions": None if regions is None else list(regions),
            "types": None if types is None else list(types),
            "severity": min_severity,
            "role": role,
            "escalation": escalation,
            "active": active,
            "id": channel_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def deactivate(conn: AsyncConnection[Any], channel_id: int) -> None:
    await conn.execute(
        "UPDATE notification_channels SET active = false WHERE id = %s", (channel_id,)
    )


# ------------------------------------------------------------------ the dispatcher's side


@dataclass(frozen=True, slots=True)
class Destination:
    """A channel as a send needs it: the sealed URL and the role its messages are written for."""

    id: int
    url_sealed: str
    role: str
    active: bool


def destinations(conn: psycopg.Connection[Any], ids: Sequence[int]) -> list[Destination]:
    """The channels ``ids`` that exist."""
    cur = conn.cursor(row_factory=class_row(Destination))
    cur.execute(
        "SELECT id, url_sealed, role, active FROM notification_channels WHERE id = ANY(%s)",
        (list(ids),),
    )
    return cur.fetchall()


_UNLESS_BUSY = "SELECT id FROM notification_channels WHERE id = %s FOR UPDATE SKIP LOCKED"


def mark_refused(
    conn: psycopg.Connection[Any], channel_id: int, at: datetime, reason: str | None
) -> None:
    """Show the admin that the channel's destination was refused, when and why."""
    conn.execute(
        "UPDATE notification_channels SET refused_at = %s, refused_reason = %s"
        f" WHERE id = ({_UNLESS_BUSY})",
        (at, reason, channel_id),
    )


def clear_refused(conn: psycopg.Connection[Any], channel_id: int) -> None:
    conn.execute(
        "UPDATE notification_channels SET refused_at = NULL, refused_reason = NULL"
        f" WHERE refused_at IS NOT NULL AND id = ({_UNLESS_BUSY})",
        (channel_id,),
    )


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a message to a person names besides the outbox payload: whose alert, in which time
    zone, and whether it touches a victim (a victim's own alert, or a zone protecting one)."""

    alert_id: int
    subject_name: str | None
    timezone: str | None
    region_name: str | None
    victim_subject: bool
    protects_victim: bool
    raised_at: datetime


def alert_facts(conn: psycopg.Connection[Any], alert_ids: Sequence[int]) -> dict[int, AlertFacts]:
    cur = conn.cursor(row_factory=class_row(AlertFacts))
    cur.execute(
        "SELECT a.id AS alert_id, s.name AS subject_name, s.timezone, r.name AS region_name,"
        " COALESCE(s.victim, false) AS victim_subject,"
        " (z.victim_subject_id IS NOT NULL OR z.protects_subject_id IS NOT NULL)"
        " IS TRUE AS protects_victim, a.raised_at"
        " FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id"
        " LEFT JOIN regions r ON r.id = COALESCE(s.region_id, a.region_id)"
        " LEFT JOIN zones z ON z.id = a.zone_id WHERE a.id = ANY(%s)",
        (list(alert_ids),),
    )
    return {f.alert_id: f for f in cur.fetchall()}
