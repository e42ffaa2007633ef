"""Shared request dependencies: a database connection and region-scoped subject lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from psycopg import AsyncConnection

from tagwatch.api import audit
from tagwatch.api.security import Role, User
from tagwatch.store import subjects
from tagwatch.store.subjects import Subject

# Who may read victims' data (victim subjects, zones protecting a victim): see
# store/migrations/0013_victim_data.sql. Everyone else gets 404 for a victim subject and
# redacted victim-protecting zones.
VICTIM_DATA_ROLES: frozenset[Role] = frozenset({"admin", "supervisor"})


def may_read_victims(user: User) -> bool:
    return user.role in VICTIM_DATA_ROLES


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One connection and one transaction per request: commit on success, roll back on error."""
    async with request.app.state.pool.connection() as conn:
        yield conn


# scope="function": the commit happens before the response is sent, so a client that got 201
# can read its write back at once (with the default, the exit code runs after the response).
Conn = Annotated[AsyncConnection, Depends(connection, scope="function")]


async def subject_in_scope(conn: AsyncConnection, user: User, subject_id: int) -> Subject:
    """The subject, or 404 whether it is missing, outside the user's regions, or a victim
    and the user may not read victims' data.

    The answers are the same so that a user cannot learn that a subject exists elsewhere (or is
    a victim). A victim's row given to a supervisor or admin is audited (``victim_subject``).
    """
    row = await subjects.subject_in_scope(
        conn, subject_id, user.region_filter(), may_read_victims(user)
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"subject {subject_id} not found")
    if row.victim:
        await audit.record(conn, user, "victim_subject", subject_id)
    return row
