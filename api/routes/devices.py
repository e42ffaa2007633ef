"""Devices: creating one provisions its broker account and shows its password exactly once."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, status
from psycopg.errors import UniqueViolation

from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.schemas import DeviceCreate, DeviceCredentials, DevicePublic
from tagwatch.api.security import CurrentUser, User, allow
from tagwatch.ingest.broker_accounts import (
    BrokerAdmin,
    BrokerAdminError,
    device_topics,
    new_device_password,
)
from tagwatch.ingest.device_broker import device_broker

router = APIRouter(prefix="/devices", tags=["devices"])
COLUMNS = "id, kind, owntracks_topic, expected_interval_s, created_at"


def _device(row: tuple[Any, ...], user: User | None = None) -> DevicePublic:
    # A victim's phone topic may carry her name: only those who may read victims' data see it.
    hide_topic = user is not None and row[1] == "victim_phone" and not may_read_victims(user)
    return DevicePublic(
        id=row[0],
        kind=row[1],
        owntracks_topic=None if hide_topic else row[2],
        expected_interval_s=row[3],
        created_at=row[4],
    )


# A device held now by a subject outside the caller's regions is invisible to them (it answers
# like a missing one); devices in stock (held by nobody) are visible to all, to be assigned.
VISIBLE = (
    "(%(regions)s::text[] IS NULL OR NOT EXISTS (SELECT 1 FROM device_assignments a"
    " JOIN subjects s ON s.id = a.subject_id WHERE a.device_id = devices.id"
    " AND a.during @> now() AND NOT s.region_id = ANY(%(regions)s::text[])))"
)


@router.get("", response_model=list[DevicePublic])
async def list_devices(
    conn: Conn,
    _user: CurrentUser,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: str = Query(default="", max_length=64, description="cursor: last id of the page"),
) -> list[DevicePublic]:
    rows = await (
        await conn.execute(
            f"SELECT {COLUMNS} FROM devices WHERE id > %(after)s AND {VISIBLE}"
            " ORDER BY id LIMIT %(limit)s",
            {"after": after_id, "limit": limit, "regions": _user.region_filter()},
        )
    ).fetchall()
    return [_device(r, _user) for r in rows]


@router.get("/{device_id}", response_model=DevicePublic)
async def read_device(device_id: str, conn: Conn, _user: CurrentUser) -> DevicePublic:
    row = await (
        await conn.execute(
            f"SELECT {COLUMNS} FROM devices WHERE id = %(id)s AND {VISIBLE}",
            {"id": device_id, "regions": _user.region_filter()},
        )
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"device {device_id!r} not found")
    return _device(row, _user)


@router.post(
    "",
    response_model=DeviceCredentials,
    status_code=201,
    dependencies=[allow("admin", "supervisor")],
)
async def create_device(body: DeviceCreate, conn: Conn, request: Request) -> DeviceCredentials:
    """The row and the broker account appear together or not at all."""
    try:
        row = await (
            await conn.execute(
                "INSERT INTO devices (id, kind, owntracks_topic, expected_interval_s) "
                f"VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}",
                (body.id, body.kind, body.owntracks_topic, body.expected_interval_s),
            )
        ).fetchone()
    except UniqueViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="device id or OwnTracks topic already registered"
        ) from exc
    assert row is not None
    password = new_device_password()
    admin = BrokerAdmin.from_url(request.app.state.settings.mqtt_admin_url)
    try:
        await anyio.to_thread.run_sync(admin.create_device, body.id, password, body.owntracks_topic)
    except BrokerAdminError as exc:
        # The transaction rolls back with the error, so no device exists without its account.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"broker provisioning failed: {exc}"
        ) from exc
    device = _device(row)
    broker = device_broker(request.app.state.settings)
    return DeviceCredentials(
        **device.model_dump(),
        mqtt_username=body.id,
        mqtt_password=password,
        mqtt_client_id=body.id,
        broker_url=broker.url,
        ca_pem=broker.ca_pem,
        publish_topics=device_topics(body.id, body.owntracks_topic),
    )
