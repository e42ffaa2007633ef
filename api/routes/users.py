"""User accounts, for admins: list, read, create, update role / regions / disabled, reset password.

Roles (declared next to each route): admin only.

Region scope: an admin with every region (``*``) manages everyone; an admin limited to some
regions sees and manages only users whose regions all lie within theirs, and cannot grant ``*``
or a region that is not theirs (403); a user outside their scope answers 404, as one that does
not exist. Password hashes are never returned. A password reset (like a user's own change)
revokes every earlier token of that user; disabling a user refuses their tokens at once. Every
change is written to the audit log (never a password). A user may carry the tracing unit he
works in (``tracing_unit_id``, a unit of the admin's regions): a tracer then reaches the cases
routed to that unit across regions while they are open (api/routes/cases.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tagwatch.api import audit
from tagwatch.api.deps import Conn
from tagwatch.api.security import (
    ALL_REGIONS,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    CurrentUser,
    Role,
    User,
    allow,
    hash_password_off_loop,
    set_password,
)
from tagwatch.store import places, subjects, users
from tagwatch.store.users import UserRow

router = APIRouter(prefix="/users", tags=["users"])
ADMIN: tuple[Role, ...] = ("admin",)

USERNAME_PATTERN = r"^[A-Za-z0-9_.@+-]{1,64}$"
REGION_OR_ALL_PATTERN = r"^(\*|[A-Za-z0-9_.-]{1,64})$"
RegionOrAll = Annotated[str, StringConstraints(pattern=REGION_OR_ALL_PATTERN)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    regions: list[RegionOrAll] = Field(
        min_length=1, max_length=100, description="region ids, or ['*'] for every region"
    )
    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    tracing_unit_id: int | None = Field(
        default=None,
        description="the tracing unit the user works in (a unit of the admin's regions): the "
        "cases routed to it reach its tracers across regions while they are not closed",
    )


class UserUpdate(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    regions: list[RegionOrAll] | None = Field(default=None, min_length=1, max_length=100)
    disabled: bool | None = None
    tracing_unit_id: int | None = Field(
        default=None, description="set the user's tracing unit; null clears it"
    )


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role
    regions: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None
    tracing_unit_id: int | None = None


def _user(row: UserRow) -> UserPublic:
    return UserPublic(
        id=row.id,
        username=row.username,
        role=row.role,  # type: ignore[arg-type]  # the CHECK constraint holds it to Role
        regions=list(row.regions),
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        password_changed_at=row.password_changed_at,
        tracing_unit_id=row.tracing_unit_id,
    )


async def checked_unit(conn: AsyncConnection, admin: User, unit_id: int | None) -> int | None:
    """A tracing unit of the admin's regions, or 422 ``unknown tracing unit`` (also for one of
    another region: the answer does not tell which units exist elsewhere)."""
    if unit_id is None:
        return None
    if await places.unit_in_scope(conn, unit_id, admin.region_filter()) is None:
        raise HTTPException(422, detail=f"unknown tracing unit {unit_id}")
    return unit_id


async def checked_regions(conn: AsyncConnection, admin: User, regions: list[str]) -> list[str]:
    """Regions as stored: deduplicated, ``['*']`` when every region; 422 for an unknown region
    (the body's schema checks the pattern), 403 for one the admin does not hold themselves."""
    if ALL_REGIONS in regions:
        if not admin.all_regions:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="only an admin of every region may grant '*'"
            )
        return [ALL_REGIONS]
    unique = list(dict.fromkeys(regions))
    # ownership first: a regional admin gets the same 403 for a region that exists elsewhere
    # and for one that does not exist, so the answer does not tell which region ids exist
    foreign = [r for r in unique if not admin.may_see_region(r)]
    if foreign:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"region {foreign[0]!r} is not yours")
    unknown = await subjects.unknown_regions(conn, unique)
    if unknown:
        raise HTTPException(422, detail=f"unknown region {unknown[0]!r}")
    return unique


async def _in_scope(
    conn: AsyncConnection, admin: User, user_id: int, *, for_update: bool = False
) -> UserRow:
    """The user's row, or 404 whether missing or outside the admin's scope. ``for_update`` locks
    the row until the request commits, so a concurrent change of the user's regions (say, to
    ``*`` by an admin of every region) cannot slip between this check and the write."""
    row = await users.user_in_scope(conn, user_id, admin.region_filter(), for_update=for_update)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"user {user_id} not found")
    return row


@router.get("", response_model=list[UserPublic], dependencies=[allow(*ADMIN)])
async def list_users(
    conn: Conn,
    admin: CurrentUser,
    role: Role | None = None,
    disabled: bool | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[UserPublic]:
    """Admin. Users in the admin's scope, by id."""
    rows = await users.list_users(
        conn,
        scope=admin.region_filter(),
        role=role,
        disabled=disabled,
        after_id=after_id,
        limit=limit,
    )
    return [_user(r) for r in rows]


@router.get("/{user_id}", response_model=UserPublic, dependencies=[allow(*ADMIN)])
async def read_user(user_id: int, conn: Conn, admin: CurrentUser) -> UserPublic:
    """Admin."""
    return _user(await _in_scope(conn, admin, user_id))


@router.post("", response_model=UserPublic, status_code=201, dependencies=[allow(*ADMIN)])
async def create_user(body: UserCreate, conn: Conn, admin: CurrentUser) -> UserPublic:
    """Admin. The password is stored as an argon2 hash and never returned."""
    regions = await checked_regions(conn, admin, body.regions)
    unit = await checked_unit(conn, admin, body.tracing_unit_id)
    try:
        row = await users.create_user(
            conn,
            body.username,
            await hash_password_off_loop(body.password),
            body.role,
            regions,
            unit,
        )
    except UniqueViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"username {body.username!r} is taken"
        ) from exc
    await audit.record(
        conn, admin, "user_create", None, user_id=row.id, username=row.username, role=row.role,
        regions=regions, tracing_unit_id=unit,
    )  # fmt: skip
    return _user(row)


@router.patch("/{user_id}", response_model=UserPublic, dependencies=[allow(*ADMIN)])
async def update_user(user_id: int, body: UserUpdate, conn: Conn, admin: CurrentUser) -> UserPublic:
    """Admin. Role, regions and disabled take effect on the user's next request."""
    await _in_scope(conn, admin, user_id, for_update=True)
    if user_id == admin.id and (body.disabled or (body.role is not None and body.role != "admin")):
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="you cannot disable or demote your own account"
        )
    regions = None if body.regions is None else await checked_regions(conn, admin, body.regions)
    unit: tuple[int | None] | None = None
    if "tracing_unit_id" in body.model_fields_set:
        unit = (await checked_unit(conn, admin, body.tracing_unit_id),)
    row = await users.update_user(
        conn, user_id, role=body.role, regions=regions, disabled=body.disabled, tracing_unit=unit
    )
    changes = body.model_dump(exclude_none=True)
    if unit is not None:
        changes["tracing_unit_id"] = unit[0]
    if regions is not None:
        changes["regions"] = regions
    await audit.record(conn, admin, "user_update", None, user_id=user_id, changes=changes)
    return _user(row)


@router.post("/{user_id}/password", status_code=204, dependencies=[allow(*ADMIN)])
async def reset_password(
    user_id: int, body: PasswordReset, conn: Conn, admin: CurrentUser
) -> Response:
    """Admin. Sets a new password, revokes every earlier token of the user and gives back the
    name's spent login budget. A regional admin reaches only users whose regions all lie
    within theirs (others answer 404): never an admin of every region or of a region beyond."""
    await _in_scope(conn, admin, user_id, for_update=True)
    await set_password(conn, user_id, body.password)
    await audit.record(conn, admin, "user_password_reset", None, user_id=user_id)
    return Response(status_code=204)
