"""Passwords, tokens and who may do what.

Passwords are argon2id hashes; tokens are short-lived HS256 JWTs carrying only the user id, so a
disabled user or a changed region takes effect on the next request (the user row is read each
time). Every route is authenticated unless it is explicitly listed as public.
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

Role = Literal["admin", "supervisor", "operator", "tracer"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
ALL_REGIONS = "*"
ALGORITHM = "HS256"

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


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    regions: tuple[str, ...]

    @property
    def all_regions(self) -> bool:
        return ALL_REGIONS in self.regions

    def region_filter(self) -> list[str] | None:
        """None means every region; otherwise the list to filter SQL with."""
        return None if self.all_regions else list(self.regions)

    def may_see_region(self, region: str) -> bool:
        return self.all_regions or region in self.regions


def issue_token(user_id: int, secret: str, minutes: int) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), minutes * 60


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def current_user(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    if not token:
        raise _unauthorized("not authenticated")
    try:
        claims = jwt.decode(token, request.app.state.settings.secret_key, algorithms=[ALGORITHM])
        user_id = int(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise _unauthorized("invalid or expired token") from exc
    async with request.app.state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id, username, role, regions FROM users WHERE id = %s AND NOT disabled",
                (user_id,),
            )
        ).fetchone()
    if row is None:
        raise _unauthorized("user unknown or disabled")
    return User(id=row[0], username=row[1], role=row[2], regions=tuple(row[3]))


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
