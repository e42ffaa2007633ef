"""Human notification channels (Apprise URLs: e-mail, SMS gateways, Telegram, Matrix, ...) of
tracing units and supervisors, for admins: list, read, create, update, deactivate.

Roles (declared next to each route): admin only.

A channel receives, as a short text written for a phone (alerts/human_message.py), the alerts
of its ``regions`` and ``types`` at or above ``min_severity``, as webhooks do. Its ``role``
(``tracer`` by default, ``operator`` or ``supervisor``) is the most its messages show: a
victim's own alert reaches supervisor channels only, and an offender's position near a victim
too. An ``escalation`` channel is a supervisor's: it receives only the ``escalated`` events of
alerts nobody acknowledged in time (docs/alerts.md "Escalation").

The Apprise URL holds the channel's credentials (an SMTP password, a bot token): it is stored
sealed under ``TAGWATCH_WEBHOOK_SECRET_KEY`` (503 without it) and never shown again; answers and
the audit log carry ``url_shown``, Apprise's own form with passwords and tokens masked. A URL
Apprise does not understand, one that notifies this server itself, or whose host is internal
(loopback, private, link-local, metadata; unless ``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` allows it),
or that sends in clear outside development, is a 422 with the reason
(alerts/apprise_channel.py, which also says what cannot be checked).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from tagwatch.alerts.apprise_channel import channel_problem, parse
from tagwatch.alerts.webhook_destination import AllowList
from tagwatch.api import audit
from tagwatch.api.deps import Conn
from tagwatch.api.routes.users import REGION_OR_ALL_PATTERN, checked_regions
from tagwatch.api.routes.webhooks import ALL, MAX_URL, NO_KEY, NO_NUL, SeverityName, _box, _types
from tagwatch.api.security import CurrentUser, Role, User, allow
from tagwatch.settings import Settings
from tagwatch.store import channels as store
from tagwatch.store.channels import Channel
from tagwatch.store.webhook_secrets import SecretBox

router = APIRouter(prefix="/channels", tags=["channels"])
ADMIN: tuple[Role, ...] = ("admin",)
RegionOrAll = Annotated[str, StringConstraints(pattern=REGION_OR_ALL_PATTERN)]
ChannelRole = Literal["tracer", "operator", "supervisor"]
AppriseUrl = Annotated[
    str, StringConstraints(min_length=4, max_length=MAX_URL, pattern=r"^[a-z0-9]+://[^\x00]*$")
]
URL_HELP = (
    "an Apprise URL (https://github.com/caronc/apprise/wiki), e.g."
    " mailtos://user:password@smtp.example.org?to=tracing@example.org; write-only"
)


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    url: AppriseUrl = Field(description=URL_HELP)
    regions: list[RegionOrAll] = Field(default_factory=lambda: [ALL], min_length=1, max_length=100)
    types: list[str] = Field(
        default_factory=lambda: [ALL],
        min_length=1,
        max_length=50,
        description="alert types of the vocabulary, or ['*'] for all",
    )
    min_severity: SeverityName = "info"
    role: ChannelRole = Field(
        default="tracer", description="the most its messages show (victims' data: supervisor)"
    )
    escalation: bool = Field(
        default=False, description="a supervisor's channel: only alerts nobody acknowledged"
    )
    active: bool = True

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return _types(value)


class ChannelUpdate(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    url: AppriseUrl | None = Field(default=None, description=URL_HELP)
    regions: list[RegionOrAll] | None = Field(default=None, min_length=1, max_length=100)
    types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    min_severity: SeverityName | None = None
    role: ChannelRole | None = None
    escalation: bool | None = None
    active: bool | None = None

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _types(value)


class ChannelPublic(BaseModel):
    id: int
    name: str
    url_shown: str = Field(description="the URL with passwords and tokens masked")
    scheme: str
    regions: list[str]
    types: list[str]
    min_severity: SeverityName
    role: ChannelRole
    escalation: bool
    active: bool
    created_at: datetime
    refused_at: datetime | None = Field(
        default=None, description="when the dispatcher last refused this destination"
    )
    refused_reason: str | None = None


def _public(row: Channel) -> ChannelPublic:
    return ChannelPublic(
        id=row.id,
        name=row.name,
        url_shown=row.url_shown,
        scheme=row.scheme,
        regions=list(row.regions),
        types=list(row.types),
        min_severity=row.min_severity,  # type: ignore[arg-type]  # CHECK holds it
        role=row.role,  # type: ignore[arg-type]  # CHECK holds it
        escalation=row.escalation,
        active=row.active,
        created_at=row.created_at,
        refused_at=row.refused_at,
        refused_reason=row.refused_reason,
    )


def _sealed(request: Request, box: SecretBox, url: str) -> tuple[str, str, str]:
    """(sealed, shown, scheme) of a URL that may be a channel; 422 with the reason if not."""
    settings: Settings = request.app.state.settings
    problem = channel_problem(
        url, settings.environment, AllowList.parse(settings.webhook_allow_hosts)
    )
    if problem is not None:
        raise HTTPException(
            422,
            detail=[{"type": "value_error", "loc": ["body", "url"], "msg": problem}],
        )  # the URL itself is not echoed: it holds credentials
    parsed = parse(url)
    return box.seal(url), parsed.shown, parsed.scheme


async def _in_scope(conn: AsyncConnection, admin: User, channel_id: int) -> Channel:
    row = await store.channel_in_scope(conn, channel_id, admin.region_filter())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"channel {channel_id} not found")
    return row


@router.get("", response_model=list[ChannelPublic], dependencies=[allow(*ADMIN)])
async def list_channels(
    conn: Conn,
    admin: CurrentUser,
    active: bool | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: int = Query(default=0, ge=0, description="cursor: the last id of the previous page"),
) -> list[ChannelPublic]:
    """Admin. Channels in the admin's scope, by id; never their URLs in clear."""
    rows = await store.list_channels(conn, admin.region_filter(), active, after_id, limit)
    return [_public(r) for r in rows]


@router.get("/{channel_id}", response_model=ChannelPublic, dependencies=[allow(*ADMIN)])
async def read_channel(channel_id: int, conn: Conn, admin: CurrentUser) -> ChannelPublic:
    """Admin."""
    return _public(await _in_scope(conn, admin, channel_id))


@router.post(
    "",
    response_model=ChannelPublic,
    status_code=201,
    dependencies=[allow(*ADMIN)],
    responses=NO_KEY,
)
async def create_channel(
    body: ChannelCreate, conn: Conn, admin: CurrentUser, request: Request
) -> ChannelPublic:
    """Admin."""
    box = _box(request)
    sealed, shown, scheme = _sealed(request, box, body.url)
    regions = await checked_regions(conn, admin, body.regions)
    row = await store.create_channel(
        conn,
        name=body.name,
        url_sealed=sealed,
        url_shown=shown,
        scheme=scheme,
        regions=regions,
        types=body.types,
        min_severity=body.min_severity,
        role=body.role,
        escalation=body.escalation,
        active=body.active,
    )
    public = _public(row)
    await audit.record(
        conn, admin, "channel_create", None, channel_id=public.id, name=public.name,
        url_shown=public.url_shown, regions=public.regions, types=public.types,
        min_severity=public.min_severity, role=public.role, escalation=public.escalation,
    )  # fmt: skip
    return public


@router.patch(
    "/{channel_id}", response_model=ChannelPublic, dependencies=[allow(*ADMIN)], responses=NO_KEY
)
async def update_channel(
    channel_id: int, body: ChannelUpdate, conn: Conn, admin: CurrentUser, request: Request
) -> ChannelPublic:
    """Admin. Applies to alerts enqueued from now on (a new URL: to pending ones too)."""
    url = None if body.url is None else _sealed(request, _box(request), body.url)
    await _in_scope(conn, admin, channel_id)
    regions = None if body.regions is None else await checked_regions(conn, admin, body.regions)
    row = await store.update_channel(
        conn,
        channel_id,
        name=body.name,
        url=url,
        regions=regions,
        types=body.types,
        min_severity=body.min_severity,
        role=body.role,
        escalation=body.escalation,
        active=body.active,
    )
    changes = body.model_dump(mode="json", exclude_none=True, exclude={"url"})
    if url is not None:
        changes["url_shown"] = url[1]
    if regions is not None:
        changes["regions"] = regions
    await audit.record(conn, admin, "channel_update", None, channel_id=channel_id, changes=changes)
    return _public(row)


@router.delete("/{channel_id}", status_code=204, dependencies=[allow(*ADMIN)])
async def deactivate_channel(channel_id: int, conn: Conn, admin: CurrentUser) -> Response:
    """Admin. Deactivates the channel (kept, with its deliveries); pending deliveries to it
    are given up by the dispatcher. PATCH ``{"active": true}`` turns it on again."""
    await _in_scope(conn, admin, channel_id)
    await store.deactivate(conn, channel_id)
    await audit.record(conn, admin, "channel_deactivate", None, channel_id=channel_id)
    return Response(status_code=204)
