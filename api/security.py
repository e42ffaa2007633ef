"""Passwords, tokens, login throttling and who may do what.

Passwords are argon2id hashes; tokens are short-lived HS256 JWTs carrying the user id, a unique
token id (``jti``) and the user's token generation (``gen``). Every authenticated request reads
the user row and the revocation list in one indexed query, so a disabled user, a changed role or
region, a logout (the ``jti`` is revoked) or a password change (the generation moves on, so every
earlier token of that user is refused) takes effect on the next request, in every API process.

Password hashing and verification cost ~64 MiB and tens of milliseconds of CPU each, so they run
in a few low-priority worker threads (api/password_work.py), at most ``login_verify_threads`` at
once per process: a login flood queues there instead of stalling the event loop that serves
every other request and the alert feed. Failed logins are throttled in api/login_throttle.py.

Every route is authenticated unless it is explicitly listed as public.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from psycopg import AsyncConnection

from tagwatch.api.password_work import Busy, password_work
from tagwatch.store import login_throttle as store_login_throttle
from tagwatch.store import users as store_users

Role = Literal["admin", "supervisor", "operator", "tracer"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
ALL_REGIONS = "*"
ALGORITHM = "HS256"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
USERNAME_MAX_LENGTH = 200

_hasher = PasswordHasher()
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash to verify against when the user does not exist, so timing does not reveal usernames.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


async def verify_password_off_loop(state: Any, password_hash: str, password: str) -> bool:
    """``verify_password`` in the process's password threads (api/password_work.py; ``state``:
    app.state, for ``login_verify_threads``); 503 with Retry-After when too many logins
    already wait for one."""
    work = password_work(int(getattr(state.settings, "login_verify_threads", 2)))
    try:
        return await work.run(verify_password, password_hash, password)
    except Busy as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="too many logins at once: try again in a moment",
            headers={"Retry-After": "1"},
        ) from exc


async def hash_password_off_loop(password: str) -> str:
    """``hash_password`` off the event loop (admin routes and password changes)."""
    return await password_work(2).run(hash_password, password)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    regions: tuple[str, ...]
    # the tracing unit a tracer works in (migration 0022): its cases reach him across regions
    tracing_unit_id: int | None = None

    @property
    def all_regions(self) -> bool:
        return ALL_REGIONS in self.regions

    def region_filter(self) -> list[str] | None:
        """None means every region; otherwise the list to filter SQL with."""
        return None if self.all_regions else list(self.regions)

    def may_see_region(self, region: str) -> bool:
        return self.all_regions or region in self.regions


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    jti: str
    expires_at: datetime
    generation: int


def issue_token(user_id: int, secret: str, minutes: int, generation: int = 0) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        "jti": secrets.token_hex(16),
        "gen": generation,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), minutes * 60


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def decode_token(token: str, secret: str) -> TokenClaims:
    """The token's claims, or 401 when it is malformed, forged or expired."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "jti"]}
        )
        generation = claims.get("gen", 0)
        jti = claims["jti"]
        if not isinstance(generation, int) or not isinstance(jti, str) or not jti:
            raise ValueError("bad claims")
        return TokenClaims(
            user_id=int(claims["sub"]),
            jti=jti,
            expires_at=datetime.fromtimestamp(float(claims["exp"]), UTC),
            generation=generation,
        )
    except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError) as exc:
        raise _unauthorized("invalid or expired token") from exc


async def current_user(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """The caller, from a valid, unrevoked token of an enabled user (one indexed query).

    Uses only ``request.app.state`` (settings, pool), so the WebSocket feed can call it too."""
    if not token:
        raise _unauthorized("not authenticated")
    claims = decode_token(token, request.app.state.settings.secret_key)
    async with request.app.state.pool.connection() as conn:
        row = await store_users.token_holder(conn, claims.user_id, claims.jti)
    if row is None:
        raise _unauthorized("user unknown or disabled")
    if row.revoked:
        raise _unauthorized("token revoked (logged out)")
    if row.token_generation != claims.generation:
        raise _unauthorized("token revoked (password changed); log in again")
    return User(
        id=row.id,
        username=row.username,
        role=row.role,  # type: ignore[arg-type]  # the CHECK constraint holds it to Role
        regions=tuple(row.regions),
        tracing_unit_id=row.tracing_unit_id,
    )


CurrentUser = Annotated[User, Depends(current_user)]


def allow(*roles: Role) -> Any:
    """Declare next to a route which roles may call it."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"role {user.role!r} may not do this"
            )
        return user

    return Depends(check)


# ------------------------------------------------------------------ revocation


async def revoke_token(conn: AsyncConnection, claims: TokenClaims) -> None:
    """Refuse this token from now on; forget revocations of tokens that have expired anyway."""
    await store_users.revoke_token(conn, claims.jti, claims.user_id, claims.expires_at)


async def set_password(conn: AsyncConnection, user_id: int, password: str) -> int | None:
    """New hash, and every earlier token of the user revoked; the new generation (None: no
    such user). The name's spent login budget is given back."""
    password_hash = await hash_password_off_loop(password)
    changed = await store_users.set_password_hash(conn, user_id, password_hash)
    if changed is None:
        return None
    generation, username = changed
    await store_login_throttle.lift_name(conn, username)
    return generation
