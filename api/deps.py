"""Shared request dependencies: a database connection and region-scoped subject lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from psycopg import AsyncConnection

from api.security import User


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One connection and one transaction per request: commit on success, roll back on error."""
    async with request.app.state.pool.connection() as conn:
        yield conn


# scope="function": the commit happens before the response is sent, so a client that got 201
# can read its write back at once (with the default, the exit code runs after the response).
Conn = Annotated[AsyncConnection, Depends(connection, scope="function")]


async def subject_in_scope(conn: AsyncConnection, user: User, subject_id: int) -> tuple[Any, ...]:
    """The subject's row, or 404 whether it is missing or outside the user's regions.

    Both answers are the same so that a user cannot learn that a subject exists elsewhere.
    """
    row = await (
        await conn.execute(
            "SELECT id, name, case_ref, region_id, timezone, groups, created_at FROM subjects "
            "WHERE id = %s AND (%s::text[] IS NULL OR region_id = ANY(%s::text[]))",
            (subject_id, user.region_filter(), user.region_filter()),
        )
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"subject {subject_id} not found")
    return row
