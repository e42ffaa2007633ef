"""Sessions: token issue (the OAuth2 password flow, the one v1 route that needs no token),
logout, password change and who am I.

Logins are throttled per client address and per user name before the password is checked
(api/login_throttle.py; docs/api.md "Login throttling"): a refused guess is answered 429 with
Retry-After and a JSON detail, and is never verified. The argon2 verification runs in a bounded
worker pool (api/security.py), and no database connection is held while it runs, so a login
flood neither stalls the event loop nor drains the pool the other routes need. Logout revokes the
presented token; a password change revokes every earlier token of the user and answers with a
fresh one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from anyio import CapacityLimiter
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from psycopg import AsyncConnection
from pydantic import BaseModel, Field, model_validator

from tagwatch.api import login_throttle
from tagwatch.api.client_address import client_address
from tagwatch.api.deps import Conn
from tagwatch.api.login_throttle import LoginPolicy, Refusal, RefusalCache, Reservation
from tagwatch.api.schemas import Token
from tagwatch.api.security import (
    DUMMY_HASH,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    ROLES,
    USERNAME_MAX_LENGTH,
    CurrentUser,
    Role,
    User,
    allow,
    decode_token,
    issue_token,
    oauth2_scheme,
    revoke_token,
    set_password,
    verify_password_off_loop,
)
from tagwatch.store import users as store_users

# /auth/token is public (listed in api.app.PUBLIC_V1); the session routes need a token.
router = APIRouter(prefix="/auth", tags=["auth"])
session_router = APIRouter(prefix="/auth", tags=["auth"])


class PasswordChange(BaseModel):
    old: str = Field(max_length=PASSWORD_MAX_LENGTH, description="the current password")
    new: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)

    @model_validator(mode="after")
    def _differs(self) -> PasswordChange:
        if self.old == self.new:
            msg = "the new password must differ from the old one"
            raise ValueError(msg)
        return self


class Me(BaseModel):
    id: int
    username: str
    role: Role
    regions: list[str]


def _bad_credentials() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="incorrect username or password",
        headers={"WWW-Authenticate": "Bearer"},
    )


THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "too many failed logins from this address or for this user name: see "
        "Retry-After (seconds) and detail.retry_after_s",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}


# Pool connections that logins may hold at once per process: a flood of logins queues here, and
# the rest of the pool stays free for every other route and the alert feed.
LOGIN_DB_SLOTS = 2


@asynccontextmanager
async def _login_db(state: Any) -> AsyncIterator[AsyncConnection]:
    slots = getattr(state, "login_db_slots", None)
    if slots is None:
        slots = state.login_db_slots = CapacityLimiter(LOGIN_DB_SLOTS)
    async with slots, state.pool.connection() as conn:
        yield conn


def _refusals(state: Any) -> RefusalCache:
    cache = getattr(state, "login_refusals", None)
    if cache is None:
        cache = state.login_refusals = RefusalCache()
    return cache


def _address(request: Request) -> str:
    return client_address(request, getattr(request.app.state.settings, "trusted_proxies", ""))


def _refuse_from_memory(request: Request, username: str) -> None:
    """429 at once when the database refused this address (and name) a moment ago."""
    refusal = _refusals(request.app.state).refusal(_address(request), username)
    if refusal is not None:
        raise refusal.http()


async def _reserve(request: Request, conn: AsyncConnection, username: str) -> Reservation:
    state = request.app.state
    address = _address(request)
    outcome = await login_throttle.reserve(
        conn, address, username, LoginPolicy.from_settings(state.settings)
    )
    if isinstance(outcome, Refusal):
        _refusals(state).remember(address, username, outcome)
        raise outcome.http()
    return outcome


async def _verify(state: Any, reservation: Reservation, password_hash: str, password: str) -> bool:
    """Verify off the event loop; a guess that was never checked (503: too many waiting) is
    given back."""
    try:
        return await verify_password_off_loop(state, password_hash, password)
    except HTTPException:
        async with _login_db(state) as conn:
            await login_throttle.give_back(conn, reservation)
        raise


@router.post("/token", response_model=Token, responses=THROTTLED)
async def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """Public. A bearer token for a username and password."""
    username = form.username
    if not username or len(username) > USERNAME_MAX_LENGTH or "\x00" in username:
        raise _bad_credentials()
    state = request.app.state
    policy = LoginPolicy.from_settings(state.settings)
    _refuse_from_memory(request, username)
    # Short connections around the verification: none is held while argon2 runs.
    async with _login_db(state) as conn:
        _refuse_from_memory(request, username)  # again: the wait for a slot may have been long
        reservation = await _reserve(request, conn, username)
        row = await store_users.credentials(conn, username)
    ok = await _verify(state, reservation, row.password_hash if row else DUMMY_HASH, form.password)
    async with _login_db(state) as conn:
        if row is None or not ok:
            await login_throttle.failed(conn, reservation, policy)
            raise _bad_credentials()
        await login_throttle.succeeded(conn, reservation)
        await login_throttle.forget_stale(conn, policy)
    settings = state.settings
    access, expires = issue_token(
        row.id, settings.secret_key, settings.token_minutes, row.token_generation
    )
    return Token(access_token=access, expires_in=expires)


@session_router.post("/logout", status_code=204, dependencies=[allow(*ROLES)])
async def logout(
    request: Request, conn: Conn, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Response:
    """Every role. Revokes the presented token, in every API process, until it expires."""
    assert token is not None  # the router's authentication refused a request without one
    await revoke_token(conn, decode_token(token, request.app.state.settings.secret_key))
    return Response(status_code=204)


@session_router.post(
    "/password", response_model=Token, responses=THROTTLED, dependencies=[allow(*ROLES)]
)
async def change_password(
    request: Request, body: PasswordChange, conn: Conn, user: CurrentUser
) -> Token:
    """Every role, for themselves. Revokes all the user's earlier tokens (this one included) and
    returns a fresh token. A wrong old password counts as a failed login (address and name)."""
    settings = request.app.state.settings
    reservation = await _reserve(request, conn, user.username)
    stored_hash = await store_users.password_hash(conn, user.id)
    state = request.app.state
    if not await _verify(
        state, reservation, DUMMY_HASH if stored_hash is None else stored_hash, body.old
    ):
        await login_throttle.failed(conn, reservation, LoginPolicy.from_settings(settings))
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the old password is incorrect")
    await login_throttle.give_back(conn, reservation)
    generation = await set_password(conn, user.id, body.new)
    assert generation is not None
    access, expires = issue_token(user.id, settings.secret_key, settings.token_minutes, generation)
    return Token(access_token=access, expires_in=expires)


@session_router.get("/me", response_model=Me, dependencies=[allow(*ROLES)])
async def me(user: CurrentUser) -> Me:
    """Every role. Who the token belongs to: username, role and regions."""
    return _me(user)


def _me(user: User) -> Me:
    return Me(id=user.id, username=user.username, role=user.role, regions=list(user.regions))
