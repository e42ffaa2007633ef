"""Escalation of alerts nobody acknowledged in time (issue 16): the one statement that finds
them and claims each exactly once, then the history and outbox rows it writes with it.

An alert is overdue when it is still ``open`` (no one acknowledged or resolved it) and its
severity's deadline (``Settings.ack_deadline_<severity>_s``; None: never) has passed since it was
*raised* (``raised_at``: when the platform knew, not the fix time, so a late upload does not
escalate at once). A warning whose condition cleared by itself is no longer escalated; a
critical one is (a strap cut and restored still needs a person to look). The claim sets
``ack_escalated_at`` in the same UPDATE that re-checks the conditions on the locked row, so two
dispatchers running this at once escalate each alert once (the loser's row is skipped or no
longer matches). The escalation is committed with the claim: history row ``escalated`` by actor
``dispatcher``, and an outbox row with event ``escalated`` that reaches the alert's usual
channels again and its region's escalation channels (store.engine_repository.enqueue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import class_row

from tagwatch.store.engine_repository import add_history, enqueue

EVENT_ESCALATED: Final = "escalated"
BATCH: Final = 100  # alerts one claim escalates
ACTOR: Final = "dispatcher"

_DEADLINE = (
    "CASE a.severity WHEN 'critical' THEN %(critical)s::float8"
    " WHEN 'warning' THEN %(warning)s::float8 WHEN 'info' THEN %(info)s::float8 END"
)


@dataclass(frozen=True, slots=True)
class Escalated:
    id: int
    region_id: str | None
    type: str
    severity: str
    raised_at: datetime
    deadline_s: float


def escalate_overdue(
    conn: psycopg.Connection[Any], deadlines: Mapping[str, float | None], limit: int = BATCH
) -> list[Escalated]:
    """Claim up to ``limit`` overdue alerts, record their escalation and enqueue it, in the
    caller's transaction; the alerts it escalated."""
    params = {
        "critical": deadlines.get("critical"),
        "warning": deadlines.get("warning"),
        "info": deadlines.get("info"),
        "limit": limit,
    }
    if all(params[s] is None for s in ("critical", "warning", "info")):
        return []
    overdue = (
        "a.status = 'open' AND a.ack_escalated_at IS NULL"
        " AND (a.cleared_at IS NULL OR a.severity = 'critical')"
        f" AND a.raised_at <= now() - make_interval(secs => {_DEADLINE})"
    )
    cur = conn.cursor(row_factory=class_row(Escalated))
    cur.execute(
        "UPDATE alerts a SET ack_escalated_at = clock_timestamp()"
        f" FROM (SELECT a.id FROM alerts a WHERE {overdue}"
        " ORDER BY a.raised_at, a.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due"
        f" WHERE a.id = due.id AND {overdue}"
        f" RETURNING a.id, a.region_id, a.type, a.severity, a.raised_at, {_DEADLINE} AS deadline_s",
        params,
    )
    escalated = cur.fetchall()
    for alert in escalated:
        add_history(
            conn,
            alert.id,
            ACTOR,
            EVENT_ESCALATED,
            {"reason": "not acknowledged in time", "deadline_s": alert.deadline_s},
        )
        enqueue(conn, alert.id, alert.region_id, alert.type, alert.severity, EVENT_ESCALATED)
    return escalated
