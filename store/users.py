"""Users (the people who log in): the SQL of the admin's user management.

``scope`` is the admin's regions, or None for an admin of every region: an admin sees only users
whose regions all lie within theirs (a user with no regions at all is not within a regional
admin's: ``'{}' <@ anything`` is true, hence the cardinality test).
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
    "id, username, role, regions, disabled, created_at, updated_at, password_changed_at,"
    " tracing_unit_id"
)
IN_SCOPE = (
    "(%(scope)s::text[] IS NULL OR (cardinality(regions) > 0 AND regions <@ %(scope)s::text[]))"
)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    role: str
    regions: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None
    tracing_unit_id: int | None = None


async def user_in_scope(
    conn: AsyncConnection[Any], user_id: int, scope: Sequence[str] | None, *, for_update: bool
) -> UserRow | None:
    """``for_update`` locks the row until the transaction ends, so a concurrent change of the
    user's regions cannot slip between the caller's check and its write."""
    lock = " FOR UPDATE" if for_update else ""
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(
        f"SELECT {COLUMNS} FROM users WHERE id = %(id)s AND {IN_SCOPE}{lock}",
        {"id": user_id, "scope": scope},
    )
    return await cur.fetchone()


async def list_users(
    conn: AsyncConnection[Any],
    *,
    scope: Sequence[str] | None,
    role: str | None,
    disabled: bool | None,
    after_id: int,
    limit: int,
) -> list[UserRow]:
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(
        f"SELECT {COLUMNS} FROM users WHERE id > %(after)s AND {IN_SCOPE}"
        " AND (%(role)s::text IS NULL OR role = %(role)s)"
        " AND (%(disabled)s::boolean IS NULL OR disabled = %(disabled)s)"
        " ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "scope": scope, "role": role, "disabled": disabled, "limit": limit},
    )
    return await cur.fetchall()


async def create_user(
    conn: AsyncConnection[Any],
    username: str,
    password_hash: str,
    role: str,
    regions: Sequence[str],
    tracing_unit_id: int | None = None,
) -> UserRow:
    """Raises UniqueViolation when the name is taken."""
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(
        "INSERT INTO users (username, password_hash, role, regions, password_changed_at,"
        f" tracing_unit_id) VALUES (%s, %s, %s, %s, now(), %s) RETURNING {COLUMNS}",
        (username, password_hash, role, list(regions), tracing_unit_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_user(
    conn: AsyncConnection[Any],
    user_id: int,
    *,
    role: str | None,
    regions: Sequence[str] | None,
    disabled: bool | None,
    tracing_unit: tuple[int | None] | None = None,
) -> UserRow:
    """None leaves a field as it is; ``tracing_unit`` is ``(unit id or None,)`` to set it."""
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(
        "UPDATE users SET role = COALESCE(%(role)s, role),"
        " regions = COALESCE(%(regions)s::text[], regions),"
        " disabled = COALESCE(%(disabled)s, disabled),"
        " tracing_unit_id = CASE WHEN %(set_unit)s THEN %(unit)s::bigint ELSE tracing_unit_id END,"
        f" updated_at = now() WHERE id = %(id)s RETURNING {COLUMNS}",
        {
            "role": role,
            "regions": None if regions is None else list(regions),
            "disabled": disabled,
            "set_unit": tracing_unit is not None,
            "unit": None if tracing_unit is None else tracing_unit[0],
            "id": user_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


# ------------------------------------------------------------------ authentication


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """What a request's token is checked against: who, and whether the token still holds."""

    id: int
    username: str
    role: str
    regions: list[str]
    token_generation: int
    revoked: bool
    tracing_unit_id: int | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    id: int
    password_hash: str
    token_generation: int


async def token_holder(conn: AsyncConnection[Any], user_id: int, jti: str) -> TokenHolder | None:
    """The enabled user ``user_id`` and whether token ``jti`` was revoked (one indexed query);
    None for an unknown or disabled user."""
    cur = conn.cursor(row_factory=class_row(TokenHolder))
    await cur.execute(
        "SELECT u.id, u.username, u.role, u.regions, u.token_generation,"
        " EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = %s) AS revoked, u.tracing_unit_id"
        " FROM users u WHERE u.id = %s AND NOT u.disabled",
        (jti, user_id),
    )
    return await cur.fetchone()


async def credentials(conn: AsyncConnection[Any], username: str) -> Credentials | None:
    """An enabled user's hash and token generation, by name, for a login."""
    cur = conn.cursor(row_factory=class_row(Credentials))
    await cur.execute(
        "SELECT id, password_hash, token_generation FROM users"
        " WHERE username = %s AND NOT disabled",
        (username,),
    )
    return await cur.fetchone()


async def password_hash(conn: AsyncConnection[Any], user_id: int) -> str | None:
    row = await (
        await conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,))
    ).fetchone()
    return None if row is None else str(row[0])


async def revoke_token(
    conn: AsyncConnection[Any], jti: str, user_id: int, expires_at: datetime
) -> None:
    """Refuse token ``jti`` from now on; forget revocations of tokens that have expired anyway."""
    await conn.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (jti) DO NOTHING",
        (jti, user_id, expires_at),
    )


async def set_password_hash(
    conn: AsyncConnection[Any], user_id: int, new_hash: str
) -> tuple[int, str] | None:
    """Store the new hash and revoke every earlier token (the generation moves on): the new
    generation and the user's name, or None when there is no such user."""
    row = await (
        await conn.execute(
            "UPDATE users SET password_hash = %s, token_generation = token_generation + 1,"
            " password_changed_at = now(), updated_at = now() WHERE id = %s"
            " RETURNING token_generation, username",
            (new_hash, user_id),
        )
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def save_user(
    conn: psycopg.Connection[Any],
    username: str,
    password_hash: str,
    role: str,
    regions: Sequence[str],
) -> None:
    """`tagwatch user add`: create the user, or reset an existing one (new password, role and
    regions, enabled again). Earlier tokens stop working and failed logins are forgotten, so a
    locked-out operator can log in with the new password at once."""
    conn.execute(
        "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, "
        "role = excluded.role, regions = excluded.regions, disabled = false, "
        "token_generation = users.token_generation + 1",
        (username, password_hash, role, list(regions)),
    )
    conn.execute("DELETE FROM login_throttle WHERE username = %s", (username,))
