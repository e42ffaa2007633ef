"""Commands to devices as the API shows them (docs/api.md, "Commands to devices")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

CommandType = Literal[
    "locate_now", "set_interval", "vibrate", "beep", "message", "set_configuration"
]
CommandState = Literal["queued", "sent", "acknowledged", "failed", "expired", "cancelled"]


class CommandCreate(BaseModel):
    type: CommandType
    args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "set_interval: interval_s (1-86400), optional duration_s (the device goes back by"
            " itself after it); vibrate / beep: optional duration_s (1-60); message: text (at"
            " most 500 characters); set_configuration (phones): configuration, OwnTracks"
            " configuration keys; locate_now: none"
        ),
    )
    expires_in_s: int | None = Field(
        default=None,
        ge=10,
        le=86_400,
        description="how long the command may wait for its device (default TAGWATCH_COMMAND_TTL_S)",
    )


class CommandPublic(BaseModel):
    id: int
    device_id: str
    type: CommandType
    args: dict[str, Any]
    state: CommandState
    origin: str = Field(description="user:<name>, pursuit (start) or pursuit_end (return)")
    alert_id: int | None = Field(description="the alert a pursuit command follows")
    created_at: datetime
    not_before: datetime
    expires_at: datetime
    sent_at: datetime | None
    send_count: int
    channel: Literal["mqtt", "http"] | None
    answered_at: datetime | None
    device_ts: datetime | None = Field(description="the device's own time in its answer")
    expired_at: datetime | None
    detail: str | None
