"""Regions, subjects and device assignments, always within the caller's regions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from psycopg.errors import ExclusionViolation, ForeignKeyViolation, UniqueViolation

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims, subject_in_scope
from tagwatch.api.schemas import (
    AssignmentCreate,
    AssignmentPublic,
    RegionCreate,
    RegionPublic,
    RegionStay,
    SubjectCreate,
    SubjectPublic,
    SubjectUpdate,
)
from tagwatch.api.security import CurrentUser, allow

router = APIRouter(tags=["subjects"])

SUBJECT_COLUMNS = "id, name, case_ref, region_id, timezone, groups, created_at, victim"


def _subject(row: tuple[Any, ...]) -> SubjectPublic:
    return SubjectPublic(
        id=row[0],
        name=row[1],
        case_ref=row[2],
        region_id=row[3],
        timezone=row[4],
        groups=list(row[5]),
        created_at=row[6],
        victim=row[7],
    )


@router.get("/regions", response_model=list[RegionPublic])
async def list_regions(conn: Conn, user: CurrentUser) -> list[RegionPublic]:
    rows = await (
        await conn.execute(
            "SELECT id, name FROM regions WHERE %s::text[] IS NULL OR id = ANY(%s::text[]) "
            "ORDER BY id",
            (user.region_filter(), user.region_filter()),
        )
    ).fetchall()
    return [RegionPublic(id=r[0], name=r[1]) for r in rows]


@router.post(
    "/regions", response_model=RegionPublic, status_code=201, dependencies=[allow("admin")]
)
async def create_region(body: RegionCreate, conn: Conn) -> RegionPublic:
    try:
        await conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (body.id, body.name))
    except UniqueViolation as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"region {body.id!r} exists") from exc
    return RegionPublic(id=body.id, name=body.name)


@router.get("/subjects", response_model=list[SubjectPublic])
async def list_subjects(
    conn: Conn,
    user: CurrentUser,
    region: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[SubjectPublic]:
    rows = await (
        await conn.execute(
            f"SELECT {SUBJECT_COLUMNS} FROM subjects "
            "WHERE id > %s AND (%s::text[] IS NULL OR region_id = ANY(%s::text[])) "
            "AND (%s::text IS NULL OR region_id = %s) AND (%s OR NOT victim) ORDER BY id LIMIT %s",
            (
                after_id,
                user.region_filter(),
                user.region_filter(),
                region,
                region,
                may_read_victims(user),
                limit,
            ),
        )
    ).fetchall()
    for r in rows:
        if r[7]:  # victims are listed to supervisors and admins only, and audited
            await audit.record(conn, user, "victim_subject", r[0], listed=True)
    return [_subject(r) for r in rows]


@router.post(
    "/subjects",
    response_model=SubjectPublic,
    status_code=201,
    dependencies=[allow("admin", "supervisor")],
)
async def create_subject(body: SubjectCreate, conn: Conn, user: CurrentUser) -> SubjectPublic:
    if not user.may_see_region(body.region_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"region {body.region_id!r} is not yours"
        )
    try:
        row = await (
            await conn.execute(
                "INSERT INTO subjects (name, case_ref, region_id, timezone, groups, victim) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {SUBJECT_COLUMNS}",
                (body.name, body.case_ref, body.region_id, body.timezone, body.groups, body.victim),
            )
        ).fetchone()
    except ForeignKeyViolation as exc:
        raise HTTPException(422, detail=f"unknown region {body.region_id!r}") from exc
    except UniqueViolation as exc:
        # case_ref is unique per region (migration 0010): only a subject of this region, which
        # the caller may see anyway, can clash; one elsewhere is neither refused nor revealed
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"case_ref {body.case_ref!r} already used in region {body.region_id!r}",
        ) from exc
    assert row is not None
    return _subject(row)


@router.get("/subjects/{subject_id}", response_model=SubjectPublic)
async def read_subject(subject_id: int, conn: Conn, user: CurrentUser) -> SubjectPublic:
    return _subject(await subject_in_scope(conn, user, subject_id))


@router.patch(
    "/subjects/{subject_id}",
    response_model=SubjectPublic,
    dependencies=[allow("admin", "supervisor")],
)
async def update_subject(
    subject_id: int, body: SubjectUpdate, conn: Conn, user: CurrentUser
) -> SubjectPublic:
    """Rename, move to another region (both must be the caller's), change time zone or groups."""
    await subject_in_scope(conn, user, subject_id)
    if body.region_id is not None and not user.may_see_region(body.region_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"region {body.region_id!r} is not yours"
        )
    changes = body.model_dump(exclude_none=True)
    if not changes:
        return _subject(await subject_in_scope(conn, user, subject_id))
    await conn.execute("SELECT set_config('tagwatch.actor', %s, true)", (user.username,))
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    try:
        row = await (
            await conn.execute(
                f"UPDATE subjects SET {assignments} WHERE id = %(id)s RETURNING {SUBJECT_COLUMNS}",
                {**changes, "id": subject_id},
            )
        ).fetchone()
    except ForeignKeyViolation as exc:
        raise HTTPException(422, detail=f"unknown region {body.region_id!r}") from exc
    assert row is not None
    return _subject(row)


@router.get("/subjects/{subject_id}/regions", response_model=list[RegionStay])
async def region_history(subject_id: int, conn: Conn, user: CurrentUser) -> list[RegionStay]:
    """Where the subject was monitored, oldest first (open-ended stays have no bound)."""
    await subject_in_scope(conn, user, subject_id)
    rows = await (
        await conn.execute(
            "SELECT region_id, lower(during), upper(during), changed_by FROM subject_regions"
            " WHERE subject_id = %s ORDER BY lower(during) NULLS FIRST",
            (subject_id,),
        )
    ).fetchall()
    return [RegionStay(region_id=r[0], from_=r[1], to=r[2], changed_by=r[3]) for r in rows]


@router.post(
    "/subjects/{subject_id}/assignments",
    response_model=AssignmentPublic,
    status_code=201,
    dependencies=[allow("admin", "supervisor")],
)
async def assign_device(
    subject_id: int, body: AssignmentCreate, conn: Conn, user: CurrentUser
) -> AssignmentPublic:
    await subject_in_scope(conn, user, subject_id)
    try:
        row = await (
            await conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during) "
                "VALUES (%s, %s, %s, tstzrange(%s, %s, '[)')) RETURNING id",
                (body.device_id, subject_id, body.role, body.from_, body.to),
            )
        ).fetchone()
    except ForeignKeyViolation as exc:
        raise HTTPException(422, detail=f"unknown device {body.device_id!r}") from exc
    except ExclusionViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"device {body.device_id!r} is already assigned during that period",
        ) from exc
    assert row is not None
    return AssignmentPublic(
        id=row[0],
        subject_id=subject_id,
        device_id=body.device_id,
        role=body.role,
        from_=body.from_,
        to=body.to,
    )


@router.get("/subjects/{subject_id}/assignments", response_model=list[AssignmentPublic])
async def list_assignments(
    subject_id: int, conn: Conn, user: CurrentUser
) -> list[AssignmentPublic]:
    await subject_in_scope(conn, user, subject_id)
    rows = await (
        await conn.execute(
            "SELECT id, device_id, role, lower(during), upper(during) FROM device_assignments "
            "WHERE subject_id = %s ORDER BY lower(during)",
            (subject_id,),
        )
    ).fetchall()
    return [
        AssignmentPublic(
            id=r[0], subject_id=subject_id, device_id=r[1], role=r[2], from_=r[3], to=r[4]
        )
        for r in rows
    ]
