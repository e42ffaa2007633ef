"""Webhook subscriptions of tracing units, for admins: list, read, create, update, deactivate,
rotate the signing secret.

Roles (declared next to each route): admin only.

A subscription receives the alerts of its ``regions`` (``['*']``: every region) and ``types``
(``['*']``: every type of the alert vocabulary) at or above ``min_severity``, as signed POSTs
(HMAC-SHA256 of the timestamp and the body with its secret; see alerts/signing.py). The secret
is shown once, in the answer to create (generated when not given) or to a rotation, and never
again; it is stored encrypted under ``TAGWATCH_WEBHOOK_SECRET_KEY`` (store/webhook_secrets.py),
so without that key create and rotate answer 503. A subscription is deactivated, not deleted, so
its delivery record keeps its meaning.

The url must be ``https`` outside development and may not name a loopback, private, link-local
or metadata address unless ``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` allows it: 422 with the reason
(alerts/webhook_destination.py). The dispatcher checks again, with DNS, on every send; when it
refuses the destination, ``refused_at`` and ``refused_reason`` say so until a delivery succeeds
or the url changes.

Region scope as for users: an admin limited to some regions sees and manages only subscriptions
whose regions lie within theirs. Every change is written to the audit log (never a secret).

A subscription may target a tracing unit (``tracing_unit_id``, issue 16): it then also receives
the critical alerts routed to that unit by where the subject is, whatever the subject's region
(store/places.py). Without ``regions`` given, such a subscription's regions are the unit's. The
unit must be in the admin's scope: another region's unit answers the 422 of a missing one.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator

from tagwatch.alerts.vocabulary import ALERT_TYPES
from tagwatch.alerts.webhook_destination import AllowList, url_problem
from tagwatch.api import audit
from tagwatch.api.deps import Conn
from tagwatch.api.routes.users import REGION_OR_ALL_PATTERN, checked_regions
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.settings import Settings
from tagwatch.store import places as places_store
from tagwatch.store import webhooks as store
from tagwatch.store.webhook_secrets import SecretBox
from tagwatch.store.webhooks import Webhook

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
ADMIN: tuple[Role, ...] = ("admin",)
ALL = "*"
SeverityName = Literal["info", "warning", "critical"]
RegionOrAll = Annotated[str, StringConstraints(pattern=REGION_OR_ALL_PATTERN)]
MAX_URL = 2000
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


def _types(value: list[str]) -> list[str]:
    unknown = sorted({t for t in value if t != ALL and t not in ALERT_TYPES})
    if unknown:
        msg = f"unknown alert type {unknown[0]!r}; known: {', '.join(sorted(ALERT_TYPES))} or *"
        raise ValueError(msg)
    return [ALL] if ALL in value else list(dict.fromkeys(value))


def _url(value: HttpUrl) -> HttpUrl:
    if len(str(value)) > MAX_URL:
        msg = f"url longer than {MAX_URL} characters"
        raise ValueError(msg)
    if not value.host:
        msg = "url needs a host"
        raise ValueError(msg)
    return value


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    url: HttpUrl = Field(
        description="https:// (http:// only in development or for an allow-listed host); not a"
        " loopback, private, link-local or metadata address unless allow-listed"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 signing key; generated when not given. Shown once.",
    )
    regions: list[RegionOrAll] = Field(default_factory=lambda: [ALL], min_length=1, max_length=100)
    types: list[str] = Field(
        default_factory=lambda: [ALL],
        min_length=1,
        max_length=50,
        description="alert types of the vocabulary, or ['*'] for all",
    )
    min_severity: SeverityName = "info"
    active: bool = True
    tracing_unit_id: int | None = Field(
        default=None,
        ge=1,
        description="also receive the critical alerts routed to this tracing unit, whatever "
        "the subject's region; regions default to the unit's",
    )

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return _types(value)

    @field_validator("url")
    @classmethod
    def _good_url(cls, value: HttpUrl) -> HttpUrl:
        return _url(value)


class WebhookUpdate(BaseModel):
    """Only the fields given change; the secret changes only through a rotation."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    url: HttpUrl | None = None
    regions: list[RegionOrAll] | None = Field(default=None, min_length=1, max_length=100)
    types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    min_severity: SeverityName | None = None
    active: bool | None = None
    tracing_unit_id: int | None = Field(default=None, ge=1, description="null: no unit")

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _types(value)

    @field_validator("url")
    @classmethod
    def _good_url(cls, value: HttpUrl | None) -> HttpUrl | None:
        return None if value is None else _url(value)


class WebhookPublic(BaseModel):
    id: int
    name: str
    url: str
    regions: list[str]
    types: list[str]
    min_severity: SeverityName
    active: bool
    created_at: datetime
    refused_at: datetime | None = Field(
        default=None, description="when the dispatcher last refused this destination"
    )
    refused_reason: str | None = Field(
        default=None, description="why (not https, or an internal address); cleared on success"
    )
    tracing_unit_id: int | None = Field(
        default=None, description="the tracing unit whose routed critical alerts it receives"
    )


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="shown once, now; keep it where the receiver checks it")


class WebhookSecret(BaseModel):
    id: int
    secret: str = Field(description="shown once, now")


def _webhook(row: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=row.id,
        name=row.name,
        url=row.url,
        regions=list(row.regions),
        types=list(row.types),
        min_severity=row.min_severity,  # type: ignore[arg-type]  # CHECK holds it to SeverityName
        active=row.active,
        created_at=row.created_at,
        refused_at=row.refused_at,
        refused_reason=row.refused_reason,
        tracing_unit_id=row.tracing_unit_id,
    )


NO_KEY: dict[int | str, dict[str, Any]] = {
    503: {"description": "TAGWATCH_WEBHOOK_SECRET_KEY is not configured"}
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _box(request: Request) -> SecretBox:
    """The secrets' cipher; 503 (a configuration fault, not the caller's) without a key."""
    box = SecretBox.optional(_settings(request).webhook_secret_key)
    if box is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="webhook secrets cannot be stored: TAGWATCH_WEBHOOK_SECRET_KEY is not set",
        )
    return box


def _check_destination(request: Request, url: str) -> None:
    """422 with the reason when the url may not be a destination here (see the module doc)."""
    settings = _settings(request)
    problem = url_problem(url, settings.environment, AllowList.parse(settings.webhook_allow_hosts))
    if problem is not None:
        raise HTTPException(
            422,  # the status of a validation error, named differently across Starlette versions
            detail=[{"type": "value_error", "loc": ["body", "url"], "msg": problem, "input": url}],
        )


async def _in_scope(conn: AsyncConnection, admin: User, webhook_id: int) -> Webhook:
    row = await store.webhook_in_scope(conn, webhook_id, admin.region_filter())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"webhook {webhook_id} not found")
    return row


async def _unit_region(conn: AsyncConnection, admin: User, unit_id: int) -> str:
    """The tracing unit's region; 422 whether it is missing or in another region."""
    unit = await places_store.unit_in_scope(conn, unit_id, admin.region_filter())
    if unit is None:
        raise HTTPException(
            422,
            detail={
                "reason": "unknown_tracing_unit",
                "message": f"tracing unit {unit_id} not found",
            },
        )
    return unit.region_id


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@router.get("", response_model=list[WebhookPublic], dependencies=[allow(*ADMIN)])
async def list_webhooks(
    conn: Conn,
    admin: CurrentUser,
    active: bool | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[WebhookPublic]:
    """Admin. Subscriptions in the admin's scope, by id; never their secrets."""
    rows = await store.list_webhooks(conn, admin.region_filter(), active, after_id, limit)
    return [_webhook(r) for r in rows]


@router.get("/{webhook_id}", response_model=WebhookPublic, dependencies=[allow(*ADMIN)])
async def read_webhook(webhook_id: int, conn: Conn, admin: CurrentUser) -> WebhookPublic:
    """Admin."""
    return _webhook(await _in_scope(conn, admin, webhook_id))


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=201,
    dependencies=[allow(*ADMIN)],
    responses=NO_KEY,
)
async def create_webhook(
    body: WebhookCreate, conn: Conn, admin: CurrentUser, request: Request
) -> WebhookCreated:
    """Admin. The answer carries the signing secret, the only time it is shown."""
    _check_destination(request, str(body.url))
    box = _box(request)
    wanted = body.regions
    if body.tracing_unit_id is not None:
        unit_region = await _unit_region(conn, admin, body.tracing_unit_id)
        if "regions" not in body.model_fields_set:
            wanted = [unit_region]
    regions = await checked_regions(conn, admin, wanted)
    secret = body.secret or new_secret()
    row = await store.create_webhook(
        conn,
        name=body.name,
        url=str(body.url),
        secret_sealed=box.seal(secret),
        regions=regions,
        types=body.types,
        min_severity=body.min_severity,
        active=body.active,
        tracing_unit_id=body.tracing_unit_id,
    )
    public = _webhook(row)
    await audit.record(
        conn, admin, "webhook_create", None, webhook_id=public.id, name=public.name,
        url=public.url, regions=public.regions, types=public.types,
        min_severity=public.min_severity, tracing_unit_id=public.tracing_unit_id,
    )  # fmt: skip
    return WebhookCreated(**public.model_dump(), secret=secret)


@router.patch("/{webhook_id}", response_model=WebhookPublic, dependencies=[allow(*ADMIN)])
async def update_webhook(
    webhook_id: int, body: WebhookUpdate, conn: Conn, admin: CurrentUser, request: Request
) -> WebhookPublic:
    """Admin. Applies to alerts enqueued from now on (a new url: to pending ones too)."""
    if body.url is not None:
        _check_destination(request, str(body.url))
    await _in_scope(conn, admin, webhook_id)
    if body.tracing_unit_id is not None:
        await _unit_region(conn, admin, body.tracing_unit_id)
    regions = None if body.regions is None else await checked_regions(conn, admin, body.regions)
    row = await store.update_webhook(
        conn,
        webhook_id,
        name=body.name,
        url=None if body.url is None else str(body.url),
        regions=regions,
        types=body.types,
        min_severity=body.min_severity,
        active=body.active,
        tracing_unit_id=body.tracing_unit_id,
        clear_tracing_unit="tracing_unit_id" in body.model_fields_set
        and body.tracing_unit_id is None,
    )
    changes = body.model_dump(mode="json", exclude_none=True)
    if "tracing_unit_id" in body.model_fields_set and body.tracing_unit_id is None:
        changes["tracing_unit_id"] = None
    if regions is not None:
        changes["regions"] = regions
    await audit.record(conn, admin, "webhook_update", None, webhook_id=webhook_id, changes=changes)
    return _webhook(row)


@router.delete("/{webhook_id}", status_code=204, dependencies=[allow(*ADMIN)])
async def deactivate_webhook(webhook_id: int, conn: Conn, admin: CurrentUser) -> Response:
    """Admin. Deactivates the subscription (kept, with its deliveries); pending deliveries to
    it are given up by the dispatcher. PATCH ``{"active": true}`` turns it on again."""
    await _in_scope(conn, admin, webhook_id)
    await store.deactivate(conn, webhook_id)
    await audit.record(conn, admin, "webhook_deactivate", None, webhook_id=webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/secret",
    response_model=WebhookSecret,
    dependencies=[allow(*ADMIN)],
    responses=NO_KEY,
)
async def rotate_secret(
    webhook_id: int, conn: Conn, admin: CurrentUser, request: Request
) -> WebhookSecret:
    """Admin. A new signing secret, shown once; the old one stops signing at once."""
    await _in_scope(conn, admin, webhook_id)
    box = _box(request)
    secret = new_secret()
    await store.replace_secret(conn, webhook_id, box.seal(secret))
    await audit.record(conn, admin, "webhook_secret_rotate", None, webhook_id=webhook_id)
    return WebhookSecret(id=webhook_id, secret=secret)
