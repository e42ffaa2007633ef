"""Regions, subjects and device assignments, always within the caller's regions."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, status
from psycopg.errors import ExclusionViolation, ForeignKeyViolation, UniqueViolation

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims, subject_in_scope
from tagwatch.api.schemas import (
    AssignmentCreate,
    AssignmentEnd,
    AssignmentPublic,
    HomeBeaconPublic,
    RegionCreate,
    RegionPublic,
    RegionStay,
    SubjectCreate,
    SubjectPublic,
    SubjectUpdate,
)
from tagwatch.api.security import CurrentUser, allow
from tagwatch.store import alerts as alert_store
from tagwatch.store import devices, subjects
from tagwatch.store.devices import AssignmentRefused, EndedAssignment
from tagwatch.store.subjects import Subject

router = APIRouter(tags=["subjects"])


def _subject(row: Subject) -> SubjectPublic:
    return SubjectPublic(
        id=row.id,
        name=row.name,
        case_ref=row.case_ref,
        region_id=row.region_id,
        timezone=row.timezone,
        groups=list(row.groups),
        created_at=row.created_at,
        victim=row.victim,
        home_beacon=None
        if row.home_beacon is None
        or row.home_beacon_approved_by is None
        or row.home_beacon_approved_at is None
        else HomeBeaconPublic(
            id=row.home_beacon,
            approved_by=row.home_beacon_approved_by,
            approved_at=row.home_beacon_approved_at,
        ),
    )


@router.get("/regions", response_model=list[RegionPublic])
async def list_regions(conn: Conn, user: CurrentUser) -> list[RegionPublic]:
    rows = await subjects.list_regions(conn, user.region_filter())
    return [RegionPublic(id=r.id, name=r.name) for r in rows]


@router.post(
    "/regions", response_model=RegionPublic, status_code=201, dependencies=[allow("admin")]
)
async def create_region(body: RegionCreate, conn: Conn) -> RegionPublic:
    try:
        await subjects.create_region(conn, body.id, body.name)
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
    rows = await subjects.list_subjects(
        conn,
        regions=user.region_filter(),
        victims=may_read_victims(user),
        region=region,
        after_id=after_id,
        limit=limit,
    )
    for r in rows:
        if r.victim:  # victims are listed to supervisors and admins only, and audited
            await audit.record(conn, user, "victim_subject", r.id, listed=True)
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
        row = await subjects.create_subject(
            conn,
            name=body.name,
            case_ref=body.case_ref,
            region_id=body.region_id,
            timezone=body.timezone,
            groups=body.groups,
            victim=body.victim,
        )
    except ForeignKeyViolation as exc:
        raise HTTPException(422, detail=f"unknown region {body.region_id!r}") from exc
    except UniqueViolation as exc:
        # case_ref is unique per region (migration 0010): only a subject of this region, which
        # the caller may see anyway, can clash; one elsewhere is neither refused nor revealed
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"case_ref {body.case_ref!r} already used in region {body.region_id!r}",
        ) from exc
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
    """Rename, move to another region (both must be the caller's), change time zone or groups;
    approve a home beacon or clear its approval (``home_beacon``: an id, or null)."""
    before = await subject_in_scope(conn, user, subject_id)
    if body.region_id is not None and not user.may_see_region(body.region_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"region {body.region_id!r} is not yours"
        )
    changes = body.model_dump(exclude_none=True)
    changes.pop("home_beacon", None)
    row = before
    if changes:
        try:
            row = await subjects.update_subject(conn, subject_id, changes, user.username)
        except ForeignKeyViolation as exc:
            raise HTTPException(422, detail=f"unknown region {body.region_id!r}") from exc
    if "home_beacon" in body.model_fields_set and body.home_beacon != before.home_beacon:
        row = await subjects.set_home_beacon(conn, subject_id, body.home_beacon, user.username)
        await audit.record(
            conn,
            user,
            "home_beacon_approve" if body.home_beacon else "home_beacon_clear",
            subject_id,
            beacon=body.home_beacon,
            previous=before.home_beacon,
        )
    return _subject(row)


@router.get("/subjects/{subject_id}/regions", response_model=list[RegionStay])
async def region_history(subject_id: int, conn: Conn, user: CurrentUser) -> list[RegionStay]:
    """Where the subject was monitored, oldest first (open-ended stays have no bound)."""
    await subject_in_scope(conn, user, subject_id)
    rows = await subjects.region_history(conn, subject_id)
    return [
        RegionStay(region_id=r.region_id, from_=r.from_, to=r.to, changed_by=r.changed_by)
        for r in rows
    ]


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
        assignment_id = await devices.assign(
            conn, body.device_id, subject_id, body.role, body.from_, body.to
        )
    except ForeignKeyViolation as exc:
        raise HTTPException(422, detail=f"unknown device {body.device_id!r}") from exc
    except ExclusionViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"device {body.device_id!r} is already assigned during that period",
        ) from exc
    return AssignmentPublic(
        id=assignment_id,
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
    rows = await devices.subject_assignments(conn, subject_id)
    return [
        AssignmentPublic(
            id=r.id,
            subject_id=subject_id,
            device_id=r.device_id,
            role=r.role,
            from_=r.from_,
            to=r.to,
        )
        for r in rows
    ]


_REFUSED_STATUS = {
    "not_found": status.HTTP_404_NOT_FOUND,
    "before_start": 422,
    "too_far_ahead": 422,
    "already_ended": status.HTTP_409_CONFLICT,
    "overlap": status.HTTP_409_CONFLICT,
}


@router.patch(
    "/subjects/{subject_id}/assignments/{assignment_id}",
    response_model=AssignmentPublic,
    dependencies=[allow("admin", "supervisor")],
)
async def end_assignment(
    subject_id: int,
    assignment_id: int,
    body: AssignmentEnd,
    request: Request,
    user: CurrentUser,
) -> AssignmentPublic:
    """End an assignment (the order is over, the tag was taken off or swapped): from ``to`` on,
    no rule judges the device for this subject, and its open device alerts are cleared with the
    reason ``assignment_ended`` (docs/alerts.md, "Assignments and rules"). The end, the release
    of the rule state and the audit row commit together, on the operator action pool (the
    release is the engine's, synchronous). An ended assignment may be shortened, never
    reopened; the end may not precede the start nor lie more than a year ahead."""
    regions, victims = user.region_filter(), may_read_victims(user)

    def work() -> EndedAssignment:
        with request.app.state.action_pool.connection() as conn:
            return _end(conn)

    def _end(conn: psycopg.Connection[Any]) -> EndedAssignment:
        # scope in SQL, in the action's own transaction: a subject out of scope is a missing one
        if not alert_store.subject_in_scope(conn, subject_id, regions, victims):
            raise AssignmentRefused("not_found", f"subject {subject_id} does not exist")
        return devices.end_assignment(
            conn, subject_id, assignment_id, body.to, (user.username, user.role)
        )

    try:
        ended = await anyio.to_thread.run_sync(work)
    except AssignmentRefused as exc:
        raise HTTPException(
            _REFUSED_STATUS[exc.reason], detail={"reason": exc.reason, "message": exc.message}
        ) from exc
    return AssignmentPublic(
        id=ended.id,
        subject_id=subject_id,
        device_id=ended.device_id,
        role=ended.role,
        from_=ended.from_,
        to=ended.to,
    )
