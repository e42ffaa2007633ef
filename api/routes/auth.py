"""Sessions: token issue (the OAuth2 password flow, the one v1 route that needs no token),
logout, password change and who am I.

Failed logins are throttled per username in the database (see api/security.py): after
``login_max_failures`` failures within the window the name is locked and answered 429 with a
Retry-After header, whatever the password. Logout revokes the presented token; a password change
revokes every earlier token of the user and answers with a fresh one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field, model_validator

from api.deps import Conn
from api.schemas import Token
from api.security import (
    DUMMY_HASH,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    ROLES,
    USERNAME_MAX_LENGTH,
    CurrentUser,
    LoginPolicy,
    Role,
    User,
    allow,
    clear_login_failures,
    decode_token,
    issue_token,
    lock_remaining,
    locked_out,
    oauth2_scheme,
    record_login_failure,
    revoke_token,
    set_password,
    verify_password,
)

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


@router.post(
    "/token",
    response_model=Token,
    responses={429: {"description": "too many failed logins: locked, see Retry-After"}},
)
async def token(
    request: Request, conn: Conn, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    """Public. A bearer token for a username and password."""
    username = form.username
    if not username or len(username) > USERNAME_MAX_LENGTH or "\x00" in username:
        raise _bad_credentials()
    settings = request.app.state.settings
    remaining = await lock_remaining(conn, username)
    if remaining is not None:
        raise locked_out(remaining)
    row = await (
        await conn.execute(
            "SELECT id, password_hash, token_generation FROM users"
            " WHERE username = %s AND NOT disabled",
            (username,),
        )
    ).fetchone()
    ok = verify_password(row[1] if row else DUMMY_HASH, form.password)
    if row is None or not ok:
        lock = await record_login_failure(conn, username, LoginPolicy.from_settings(settings))
        # The error rolls the request's transaction back: keep the count.
        await conn.commit()
        if lock is not None:
            raise locked_out(lock)
        raise _bad_credentials()
    await clear_login_failures(conn, username)
    access, expires = issue_token(row[0], settings.secret_key, settings.token_minutes, row[2])
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
    "/password",
    response_model=Token,
    responses={429: {"description": "too many failed attempts: locked, see Retry-After"}},
    dependencies=[allow(*ROLES)],
)
async def change_password(
    request: Request, body: PasswordChange, conn: Conn, user: CurrentUser
) -> Token:
    """Every role, for themselves. Revokes all the user's earlier tokens (this one included) and
    returns a fresh token. A wrong old password counts as a failed login."""
    settings = request.app.state.settings
    remaining = await lock_remaining(conn, user.username)
    if remaining is not None:
        raise locked_out(remaining)
    row = await (
        await conn.execute("SELECT password_hash FROM users WHERE id = %s", (user.id,))
    ).fetchone()
    if row is None or not verify_password(row[0], body.old):
        lock = await record_login_failure(conn, user.username, LoginPolicy.from_settings(settings))
        await conn.commit()
        if lock is not None:
            raise locked_out(lock)
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the old password is incorrect")
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
