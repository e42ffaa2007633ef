"""Commands to devices: operators and above send them; everyone who sees the device sees them.

A command is queued here and sent by the dispatcher's command sender (alerts/command_sender.py);
its state follows the device's answer. The device must be visible to the caller (region scope,
as every device route), and the request is audited with the subject holding the device.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from tagwatch.alerts.device_commands import CommandRefused, check_command
from tagwatch.api import audit
from tagwatch.api.deps import Conn
from tagwatch.api.schemas_commands import CommandCreate, CommandPublic
from tagwatch.api.security import CurrentUser, User, allow
from tagwatch.store import commands, devices
from tagwatch.store.devices import Device

router = APIRouter(prefix="/devices", tags=["devices"])


def _public(row: commands.Command) -> CommandPublic:
    return CommandPublic.model_validate(row, from_attributes=True)


async def _device(conn: Any, device_id: str, user: User) -> Device:
    row = await devices.visible_device(conn, device_id, user.region_filter())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"device {device_id!r} not found")
    return row


@router.post(
    "/{device_id}/commands",
    response_model=CommandPublic,
    status_code=201,
    dependencies=[allow("admin", "supervisor", "operator")],
)
async def send_command(
    device_id: str, body: CommandCreate, conn: Conn, user: CurrentUser, request: Request
) -> CommandPublic:
    """Queue a command; 422 when the device has no such command or its arguments are wrong."""
    device = await _device(conn, device_id, user)
    try:
        args = check_command(device.kind, body.type, body.args, osmand=device.osmand)
    except CommandRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    ttl = body.expires_in_s or request.app.state.settings.command_ttl_s
    row = await commands.queue_command(
        conn, device_id, body.type, args, f"user:{user.username}", ttl
    )
    await audit.record(
        conn,
        user,
        "device_command",
        await commands.holder_now(conn, device_id),
        device_id=device_id,
        command_id=row.id,
        type=body.type,
    )
    return _public(row)


@router.get("/{device_id}/commands", response_model=list[CommandPublic])
async def list_commands(
    device_id: str,
    conn: Conn,
    user: CurrentUser,
    limit: int = Query(default=50, ge=1, le=500),
    before_id: int | None = Query(default=None, ge=1, description="cursor: last id of the page"),
) -> list[CommandPublic]:
    """Newest first, with their states."""
    await _device(conn, device_id, user)
    return [_public(r) for r in await commands.list_commands(conn, device_id, before_id, limit)]


@router.get("/{device_id}/commands/{command_id}", response_model=CommandPublic)
async def read_command(
    device_id: str, command_id: int, conn: Conn, user: CurrentUser
) -> CommandPublic:
    await _device(conn, device_id, user)
    row = await commands.read_command(conn, device_id, command_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"command {command_id} not found")
    return _public(row)
