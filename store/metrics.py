"""What the health routes ask the database: ingest's counters and the open alerts for /metrics,
and whether it answers at all for /readyz."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from psycopg import AsyncConnection


async def ingest_counters(conn: AsyncConnection[Any]) -> dict[str, dict[str, float]]:
    """metric -> label -> value, summed over ingest's processes."""
    rows = await (
        await conn.execute(
            "SELECT metric, label, sum(value) FROM ingest_counters GROUP BY metric, label"
        )
    ).fetchall()
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for metric, label, value in rows:
        values[metric][label] = float(value)
    return values


async def open_alerts(conn: AsyncConnection[Any]) -> float:
    row = await (
        await conn.execute("SELECT count(*) FROM alerts WHERE status <> 'resolved'")
    ).fetchone()
    return float(row[0]) if row else 0.0


async def ping(conn: AsyncConnection[Any]) -> None:
    """The cheapest round trip: raises when the database does not answer (/readyz)."""
    await conn.execute("SELECT 1")
