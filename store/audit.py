"""The audit log's appends (the chain itself is kept by the database: see
store/migrations/0004_security.sql)."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection


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
    await conn.execute(
        "INSERT INTO audit_log (username, role, action, subject_id, detail) "
        "SELECT %(username)s::text, %(role)s::text, %(action)s::text, %(subject)s::bigint,"
        " %(detail)s::jsonb || CASE WHEN EXISTS (SELECT 1 FROM subjects"
        " WHERE id = %(subject)s::bigint AND victim) THEN '{\"victim\": true}'::jsonb"
        " ELSE '{}'::jsonb END",
        {
            "username": username,
            "role": role,
            "action": action,
            "subject": subject_id,
            "detail": json.dumps(detail, default=str),
        },
    )
