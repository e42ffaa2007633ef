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


ACK_WINDOW_HOURS = 24


async def time_to_acknowledge(
    conn: AsyncConnection[Any],
) -> list[tuple[str, int, float | None, float | None]]:
    """Per region (``unassigned`` without one): how many alerts were acknowledged in the last
    ``ACK_WINDOW_HOURS`` hours, and the median and 90th percentile of their time to
    acknowledge (``acknowledged_at - raised_at``), in seconds."""
    rows = await (
        await conn.execute(
            "SELECT COALESCE(region_id, 'unassigned'), count(*),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY s),"
            " percentile_cont(0.9) WITHIN GROUP (ORDER BY s)"
            " FROM (SELECT region_id, greatest(0, EXTRACT(EPOCH FROM"
            " acknowledged_at - raised_at))::float8 AS s FROM alerts"
            " WHERE acknowledged_at >= now() - make_interval(hours => %s)) w"
            " GROUP BY 1 ORDER BY 1",
            (ACK_WINDOW_HOURS,),
        )
    ).fetchall()
    return [(r, int(n), m, p) for r, n, m, p in rows]


async def escalated_unacknowledged(conn: AsyncConnection[Any]) -> list[tuple[str, int]]:
    """Per region: alerts ever escalated for want of acknowledgement."""
    rows = await (
        await conn.execute(
            "SELECT COALESCE(region_id, 'unassigned'), count(*) FROM alerts"
            " WHERE ack_escalated_at IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
    ).fetchall()
    return [(r, int(n)) for r, n in rows]


async def ping(conn: AsyncConnection[Any]) -> None:
    """The cheapest round trip: raises when the database does not answer (/readyz)."""
    await conn.execute("SELECT 1")
