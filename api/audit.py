"""The audit log of location reads: who looked at whose position, when, and why if they said."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection

from api.security import User


async def record(
    conn: AsyncConnection, user: User, action: str, subject_id: int | None, **detail: Any
) -> None:
    """Written in the caller's transaction, so a read that fails to be audited is not served."""
    await conn.execute(
        "INSERT INTO audit_log (username, role, action, subject_id, detail) "
        "VALUES (%s, %s, %s, %s, %s::jsonb)",
        (user.username, user.role, action, subject_id, json.dumps(detail, default=str)),
    )
