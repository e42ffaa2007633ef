"""Token issue: the OAuth2 password flow, the one v1 route that needs no token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import Conn
from api.schemas import Token
from api.security import DUMMY_HASH, issue_token, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=Token)
async def token(
    request: Request, conn: Conn, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    row = await (
        await conn.execute(
            "SELECT id, password_hash FROM users WHERE username = %s AND NOT disabled",
            (form.username,),
        )
    ).fetchone()
    ok = verify_password(row[1] if row else DUMMY_HASH, form.password)
    if row is None or not ok:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings = request.app.state.settings
    access, expires = issue_token(row[0], settings.secret_key, settings.token_minutes)
    return Token(access_token=access, expires_in=expires)
