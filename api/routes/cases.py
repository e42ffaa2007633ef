"""Absconder cases (issue 16): who is tracing, what was tried, how it ended; and subjects'
photos, which tracing units need and which are served only through audited reads.

A case is opened with every absconder alert (the engine's, or an operator's declaration:
``store/cases.py``). Roles (declared next to each route):

* read cases and a case's photo, log a trace attempt, mark a case traced, set the officer and
  the police case and warrant numbers: admin, supervisor, operator, tracer;
* assign the tracing unit (PATCH ``tracing_unit_id``): admin, supervisor, operator (a tracer
  gets 403);
* close a traced case: admin, supervisor, operator;
* put a subject's photo: admin, supervisor; read it through the subject: every role in region.

Region scope as for alerts (in SQL): a case is in the caller's scope when its region (the
subject's home region when it opened) or the subject's current region is one of the caller's;
anything else answers 404, as a case that does not exist. A tracer also reaches the cases
whose tracing unit is his own (``users.tracing_unit_id``), in any region, while they are not
closed: the explicit grant of ``absconder_case_grants`` (migration 0023), which starts when the
case is routed or assigned to the unit and ends when it is reassigned or closed. The grant is
the case and nothing else: every subject route still answers 404 to him.

Every read and every change is written to the audit log in its transaction. A read through a
grant names it (``via: grant``, ``grant_id``); a change that starts or ends a grant writes
``case_grant_start`` / ``case_grant_end`` rows (a grant the engine starts when it opens a case
is in the grants table, with ``granted_by: engine``: ingest writes no audit rows).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims, subject_in_scope
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.store import cases

router = APIRouter(tags=["cases"])
READ_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator", "tracer")
WORK_ROLES: tuple[Role, ...] = READ_ROLES
CLOSE_ROLES: tuple[Role, ...] = ("admin", "supervisor", "operator")
PHOTO_WRITERS: tuple[Role, ...] = ("admin", "supervisor")

CaseStatus = Literal["outstanding", "traced", "closed"]
Outcome = Literal["returned_to_supervision", "arrested", "deceased", "other"]
Cause = Literal["strap_tamper", "silence", "inclusion_exit", "declared"]
# What a clock may be ahead of ours by when a tracer's phone sends a time.
CLOCK_SKEW = timedelta(minutes=5)

PHOTO_MAX_BYTES = 2_000_000  # the column's CHECK (migration 0022)
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")


def photo_type_of(data: bytes) -> str | None:
    """The image type the bytes are, by their magic numbers (never by what the client says)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# ------------------------------------------------------------------ schemas


class CasePosition(BaseModel):
    ts: float | None = Field(default=None, description="fix time, epoch seconds")
    lon: float
    lat: float
    acc: float | None = None


class CaseSummary(BaseModel):
    id: int
    subject_id: int
    subject_name: str
    region_id: str
    alert_id: int | None = Field(description="the absconder alert that opened the case")
    cause: Cause
    opened_at: datetime
    status: CaseStatus
    outcome: Outcome | None
    traced_at: datetime | None
    closed_at: datetime | None
    days_at_large: float = Field(description="from opened_at to traced_at (or to now)")
    tracing_unit_id: int | None
    tracing_unit_name: str | None
    officer: str | None
    police_case_number: str | None
    warrant_number: str | None
    last_known: CasePosition | None
    photo_url: str | None = Field(description="GET it with the bearer token (audited)")
    access: Literal["region", "grant"] = Field(
        description="how the caller reaches the case: by region, or by his tracing unit's grant"
    )
    updated_at: datetime


class CaseAttempt(BaseModel):
    id: int
    at: datetime
    place: str | None
    lon: float | None
    lat: float | None
    method: str
    outcome: str
    by_username: str
    created_at: datetime


class CaseAlert(BaseModel):
    id: int
    type: str
    status: str
    opened_at: datetime
    escalated_from: str | None
    joined_at: datetime


class CaseGrant(BaseModel):
    id: int
    tracing_unit_id: int
    tracing_unit_name: str | None
    unit_region_id: str | None
    granted_at: datetime
    granted_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None


class CaseDetail(CaseSummary):
    trail: list[CasePosition] = Field(
        description="the positions before the absconder, oldest first"
    )
    attempts: list[CaseAttempt]
    alerts: list[CaseAlert] = Field(description="the absconder alerts of the case (link: alert_id)")
    grants: list[CaseGrant] = Field(
        description="tracing units' access to the case, past and present"
    )


class CaseUpdate(BaseModel):
    """Only the fields given change; null clears one."""

    model_config = ConfigDict(extra="forbid")

    tracing_unit_id: int | None = Field(
        default=None, description="assign a tracing unit (any region): its tracers get the case"
    )
    officer: str | None = Field(default=None, min_length=1, max_length=200)
    police_case_number: str | None = Field(default=None, min_length=1, max_length=100)
    warrant_number: str | None = Field(default=None, min_length=1, max_length=100)


class AttemptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime | None = Field(default=None, description="when (default: now)")
    place: str | None = Field(default=None, min_length=1, max_length=500)
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    method: str = Field(
        min_length=1, max_length=100, description="e.g. home visit, phone call, informant"
    )
    outcome: str = Field(min_length=1, max_length=1000, description="what came of it")

    @model_validator(mode="after")
    def _where(self) -> AttemptBody:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither")
        if self.place is None and self.lon is None:
            raise ValueError("say where: place, or lon and lat")
        return self


class TraceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    traced_at: AwareDatetime | None = Field(default=None, description="when (default: now)")


# ------------------------------------------------------------------ helpers


def scope_of(user: User) -> cases.Scope:
    """The caller's regions; a tracer's unit's grants count too (no other role's)."""
    unit = user.tracing_unit_id if user.role == "tracer" else None
    return cases.Scope(user.region_filter(), may_read_victims(user), unit)


def _not_found(case_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"case {case_id} not found")


async def _case(conn: Any, user: User, case_id: int, *, lock: bool = False) -> cases.CaseRow:
    row = await cases.case_in_scope(conn, case_id, scope_of(user), for_update=lock)
    if row is None:
        raise _not_found(case_id)
    return row


def _position(value: Any) -> CasePosition | None:
    if not isinstance(value, dict) or value.get("lon") is None or value.get("lat") is None:
        return None
    return CasePosition.model_validate({k: value.get(k) for k in ("ts", "lon", "lat", "acc")})


def _summary(row: cases.CaseRow, now: datetime) -> dict[str, Any]:
    end = row.traced_at or now
    return {
        "id": row.id,
        "subject_id": row.subject_id,
        "subject_name": row.subject_name,
        "region_id": row.region_id,
        "alert_id": row.alert_id,
        "cause": row.cause,
        "opened_at": row.opened_at,
        "status": row.status,
        "outcome": row.outcome,
        "traced_at": row.traced_at,
        "closed_at": row.closed_at,
        "days_at_large": round(max(0.0, (end - row.opened_at).total_seconds()) / 86400, 3),
        "tracing_unit_id": row.tracing_unit_id,
        "tracing_unit_name": row.tracing_unit_name,
        "officer": row.officer,
        "police_case_number": row.police_case_number,
        "warrant_number": row.warrant_number,
        "last_known": _position(row.last_known),
        "photo_url": f"/api/v1/cases/{row.id}/photo" if row.has_photo else None,
        "access": "grant" if row.via_grant is not None else "region",
        "updated_at": row.updated_at,
    }


def _via(row: cases.CaseRow) -> dict[str, Any]:
    if row.via_grant is None:
        return {"via": "region"}
    return {"via": "grant", "grant_id": row.via_grant}


async def _detail(conn: Any, row: cases.CaseRow) -> CaseDetail:
    trail = [p for p in (_position(x) for x in row.trail or []) if p is not None]
    return CaseDetail(
        **_summary(row, datetime.now(UTC)),
        trail=trail,
        attempts=[CaseAttempt(**a) for a in await cases.attempts(conn, row.id)],
        alerts=[CaseAlert(**a) for a in await cases.case_alerts(conn, row.id)],
        grants=[CaseGrant(**g) for g in await cases.grants(conn, row.id)],
    )


async def _audit_grant_change(
    conn: Any, user: User, row: cases.CaseRow, before: dict[str, Any] | None
) -> None:
    """``case_grant_end`` / ``case_grant_start`` rows when the change moved the grant."""
    after = await cases.active_grant(conn, row.id)
    if (before or {}).get("id") == (after or {}).get("id"):
        return
    if before is not None:
        await audit.record(
            conn, user, "case_grant_end", row.subject_id, case_id=row.id, grant_id=before["id"],
            tracing_unit_id=before["tracing_unit_id"], unit_region_id=before["unit_region_id"],
        )  # fmt: skip
    if after is not None:
        await audit.record(
            conn, user, "case_grant_start", row.subject_id, case_id=row.id, grant_id=after["id"],
            tracing_unit_id=after["tracing_unit_id"], unit_region_id=after["unit_region_id"],
        )  # fmt: skip


# ------------------------------------------------------------------ routes


@router.get("/cases", response_model=list[CaseSummary], dependencies=[allow(*READ_ROLES)])
async def list_cases(
    conn: Conn,
    user: CurrentUser,
    status_: Annotated[list[CaseStatus] | None, Query(alias="status")] = None,
    region: str | None = Query(default=None, max_length=64),
    unit: int | None = Query(default=None, description="only cases of this tracing unit"),
    mine: bool = Query(default=False, description="only the cases of the caller's tracing unit"),
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> list[CaseSummary]:
    """The cases in the caller's scope (a tracer's: his regions' and his unit's, across
    regions), by id. Filters combine; ``status`` repeats. Shows last known positions: one
    audit row (``case_list``) names the cases and subjects listed."""
    if mine:
        if user.tracing_unit_id is None:
            return []
        unit = user.tracing_unit_id
    rows = await cases.list_cases(
        conn, scope_of(user), status=status_, region=region, unit=unit, after_id=after_id,
        limit=limit,
    )  # fmt: skip
    now = datetime.now(UTC)
    await audit.record(
        conn, user, "case_list", None, reason=reason, case_ids=[r.id for r in rows],
        subject_ids=sorted({r.subject_id for r in rows}),
        grant_ids=sorted({r.via_grant for r in rows if r.via_grant is not None}),
    )  # fmt: skip
    return [CaseSummary(**_summary(r, now)) for r in rows]


@router.get("/cases/{case_id}", response_model=CaseDetail, dependencies=[allow(*READ_ROLES)])
async def read_case(
    case_id: int,
    conn: Conn,
    user: CurrentUser,
    reason: str | None = Query(default=None, max_length=500, description="why, for the audit log"),
) -> CaseDetail:
    """The case: subject's name, photo link, last known position and trail, trace attempts,
    its absconder alerts and the grants. A location read: audited (``case_read``)."""
    row = await _case(conn, user, case_id)
    await audit.record(
        conn, user, "case_read", row.subject_id, case_id=case_id, reason=reason, **_via(row)
    )
    return await _detail(conn, row)


@router.patch("/cases/{case_id}", response_model=CaseDetail, dependencies=[allow(*WORK_ROLES)])
async def update_case(case_id: int, body: CaseUpdate, conn: Conn, user: CurrentUser) -> CaseDetail:
    """Assign the tracing unit (not tracers: 403) and the officer; record the police case and
    warrant numbers. A closed case is not changed (409). Moving the unit ends the old unit's
    grant and starts the new one's (audited)."""
    changes = body.model_dump(exclude_unset=True)
    if "tracing_unit_id" in changes and user.role == "tracer":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a tracer may not reassign a case")
    row = await _case(conn, user, case_id, lock=True)
    if row.status == "closed":
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"case {case_id} is closed")
    unit = changes.get("tracing_unit_id")
    if unit is not None and await cases.unit_exists(conn, unit) is None:
        raise HTTPException(422, detail=f"unknown tracing unit {unit}")
    before = await cases.active_grant(conn, case_id)
    await cases.update_case(conn, case_id, changes, user.username)
    await audit.record(
        conn, user, "case_update", row.subject_id, case_id=case_id, changes=changes, **_via(row)
    )
    await _audit_grant_change(conn, user, row, before)
    # a tracer who just changed his own access reads the case as he now may (or not)
    fresh = await cases.case_in_scope(conn, case_id, scope_of(user))
    return await _detail(conn, fresh or row)


@router.post(
    "/cases/{case_id}/attempts",
    response_model=CaseAttempt,
    status_code=201,
    dependencies=[allow(*WORK_ROLES)],
)
async def add_attempt(
    case_id: int, body: AttemptBody, conn: Conn, user: CurrentUser
) -> CaseAttempt:
    """Log a trace attempt (when, where, how, what came of it; by the caller). Not on a closed
    case (409); not in the future (422)."""
    row = await _case(conn, user, case_id, lock=True)
    if row.status == "closed":
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"case {case_id} is closed")
    now = datetime.now(UTC)
    at = body.at or now
    if at > now + CLOCK_SKEW:
        raise HTTPException(422, detail="an attempt cannot be in the future")
    attempt = await cases.add_attempt(
        conn, case_id, at=at, place=body.place, lon=body.lon, lat=body.lat, method=body.method,
        outcome=body.outcome, by=user.username,
    )  # fmt: skip
    await audit.record(
        conn, user, "case_attempt", row.subject_id, case_id=case_id, attempt_id=attempt["id"],
        **_via(row),
    )  # fmt: skip
    return CaseAttempt(**attempt)


@router.post("/cases/{case_id}/trace", response_model=CaseDetail, dependencies=[allow(*WORK_ROLES)])
async def trace_case(case_id: int, body: TraceBody, conn: Conn, user: CurrentUser) -> CaseDetail:
    """Mark the outstanding case traced with its outcome (409 when it is not outstanding;
    422 when ``traced_at`` is before the case opened or in the future)."""
    row = await _case(conn, user, case_id, lock=True)
    if row.status != "outstanding":
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"case {case_id} is {row.status}")
    now = datetime.now(UTC)
    traced_at = body.traced_at or now
    if traced_at < row.opened_at or traced_at > now + CLOCK_SKEW:
        raise HTTPException(422, detail="traced_at must lie between the case's opening and now")
    await cases.mark_traced(conn, case_id, body.outcome, traced_at, user.username)
    await audit.record(
        conn, user, "case_traced", row.subject_id, case_id=case_id, outcome=body.outcome,
        traced_at=traced_at.isoformat(), **_via(row),
    )  # fmt: skip
    fresh = await cases.case_in_scope(conn, case_id, scope_of(user))
    assert fresh is not None
    return await _detail(conn, fresh)


@router.post(
    "/cases/{case_id}/close", response_model=CaseDetail, dependencies=[allow(*CLOSE_ROLES)]
)
async def close_case(case_id: int, conn: Conn, user: CurrentUser) -> CaseDetail:
    """Close a traced case (409 otherwise): the tracing unit's grant ends (audited)."""
    row = await _case(conn, user, case_id, lock=True)
    if row.status != "traced":
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"case {case_id} is {row.status}")
    before = await cases.active_grant(conn, case_id)
    assert row.traced_at is not None
    await cases.close(conn, case_id, max(datetime.now(UTC), row.traced_at), user.username)
    await audit.record(conn, user, "case_closed", row.subject_id, case_id=case_id, **_via(row))
    await _audit_grant_change(conn, user, row, before)
    fresh = await cases.case_in_scope(conn, case_id, scope_of(user))
    assert fresh is not None  # closers reach cases by region, never by a grant
    return await _detail(conn, fresh)


# ------------------------------------------------------------------ photos

PHOTO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in PHOTO_TYPES},
        "description": "the photo",
    }
}


def _photo_response(photo: cases.Photo) -> Response:
    return Response(
        content=photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/cases/{case_id}/photo",
    response_class=Response,
    responses=PHOTO_RESPONSES,
    dependencies=[allow(*READ_ROLES)],
)
async def case_photo(case_id: int, conn: Conn, user: CurrentUser) -> Response:
    """The subject's photo, through the case (a tracer's grant reaches it). Audited
    (``subject_photo``, ``via``); 404 when the subject has none."""
    row = await _case(conn, user, case_id)
    photo = await cases.photo(conn, row.subject_id)
    if photo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"case {case_id} has no photo")
    await audit.record(conn, user, "subject_photo", row.subject_id, case_id=case_id, **_via(row))
    return _photo_response(photo)


@router.get(
    "/subjects/{subject_id}/photo",
    response_class=Response,
    responses=PHOTO_RESPONSES,
    dependencies=[allow(*READ_ROLES)],
)
async def subject_photo(subject_id: int, conn: Conn, user: CurrentUser) -> Response:
    """The subject's photo (in the caller's regions). Audited (``subject_photo``)."""
    subject = await subject_in_scope(conn, user, subject_id)
    photo = await cases.photo(conn, subject.id)
    if photo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"subject {subject_id} has no photo")
    await audit.record(conn, user, "subject_photo", subject.id, via="subject")
    return _photo_response(photo)


class PhotoStored(BaseModel):
    subject_id: int
    content_type: str
    bytes: int
    updated_at: datetime


@router.put(
    "/subjects/{subject_id}/photo",
    response_model=PhotoStored,
    dependencies=[allow(*PHOTO_WRITERS)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in PHOTO_TYPES},
        }
    },
)
async def put_subject_photo(
    subject_id: int, request: Request, conn: Conn, user: CurrentUser
) -> PhotoStored:
    """Replace the subject's photo: the raw image as the body, ``Content-Type`` one of
    image/jpeg, image/png, image/webp (415 otherwise), at most 2,000,000 bytes (413), and the
    bytes must be that type (422: checked by their magic numbers). Audited."""
    subject = await subject_in_scope(conn, user, subject_id)
    declared = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if declared not in PHOTO_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"a photo is one of {', '.join(PHOTO_TYPES)}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > PHOTO_MAX_BYTES:
        raise HTTPException(413, detail=f"a photo is at most {PHOTO_MAX_BYTES} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > PHOTO_MAX_BYTES:
            raise HTTPException(413, detail=f"a photo is at most {PHOTO_MAX_BYTES} bytes")
    actual = photo_type_of(bytes(data))
    if actual != declared:
        raise HTTPException(
            422, detail=f"the bytes are not {declared}" + (f" but {actual}" if actual else "")
        )
    updated_at = await cases.put_photo(conn, subject.id, declared, bytes(data))
    await audit.record(
        conn, user, "subject_photo_put", subject.id, content_type=declared, bytes=len(data)
    )
    return PhotoStored(
        subject_id=subject.id, content_type=declared, bytes=len(data), updated_at=updated_at
    )
