"""The audit log of location reads (and of admin changes): who, role, which subject or area,
when, and why if they said (``reason``, kept in ``detail``).

Rows are hash-chained by the database at the commit of the transaction that wrote them (see
store/migrations/0004_security.sql): the chain is serialised on a one-row head, so concurrent
requests never fork it, and `tagwatch audit verify` names the first row that was altered, deleted
or inserted out of chain.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection

from api.security import User


async def record(
    conn: AsyncConnection, user: User, action: str, subject_id: int | None, **detail: Any
) -> None:
    """Written in the caller's transaction, so a read that fails to be audited is not served,
    and a read that is rolled back leaves no row (nor a link in the chain)."""
    await conn.execute(
        "INSERT INTO audit_log (username, role, action, subject_id, detail) "
        "VALUES (%s, %s, %s, %s, %s::jsonb)",
        (user.username, user.role, action, subject_id, json.dumps(detail, default=str)),
    )
