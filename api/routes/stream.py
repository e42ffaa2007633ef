"""The live alert feed: WebSocket ``/api/v1/alerts/stream``, region-scoped and resumable.

Protocol
--------
1. Connect. Authenticate with the bearer token as the first message,
   ``{"token": "<access token>"}``. Only there: a token in the URL (``?token=``) ends up in the
   access logs of every proxy on the way, so a connection that carries one is closed with code
   1008 (policy violation) before anything is read, even when the token is valid. Without a
   valid token within 5 seconds the server closes with 1008 too (an unauthenticated connection
   holds a socket and a task; it gets no longer than a browser needs to send its first
   message). The token is checked again every 30 seconds, so an expired or revoked token, a
   disabled user or a changed region ends the feed the same way.
2. The server sends ``{"type": "ready", "cursor": <outbox id>}``: events after that id follow.
3. Each event: ``{"type": "alert", "id": <outbox id>, "event": "opened" | "cleared" |
   "acknowledged" | "resolved" | "escalated" (not acknowledged in time, docs/alerts.md),
   "at": <when the event was written>, "alert_id": ...,
   "alert": {alert_id, type, severity, status, subject_id, region, device_id, zone_id,
   opened_at, first_fix_at, cleared_at, late, details}}``. Positions (``lat``, ``lon``, an
   absconder's ``last_known`` and ``trail``) are left out: they are location data, read through
   ``GET /api/v1/alerts/{id}``, which is audited. Updates of an open episode (a new last fix) are
   not outbox events and are not streamed; notes neither.
4. Resume after a reconnect with ``?after=<the highest id received>``: every event after it is
   sent again, in id order. Delivery is at least once: an event may repeat (deduplicate by
   ``id``), and one whose transaction committed after a later one arrives late, after it.

Only events of alerts in the user's regions (the alert's subject's region, as for
``GET /alerts``) are sent; the filter is part of the SQL. Other messages from the client are
ignored. The database is polled every half second with one short query per connection (a pool
connection is borrowed for the query only).

Outbox ids come from a sequence, so a transaction that took a lower id can commit after one that
took a higher id. A feed that only asked for ``id > cursor`` would skip it; this one remembers
the ids it has not seen below its cursor and asks for them again for a while (an id that never
appears belonged to a transaction that rolled back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, cast

import anyio
import psycopg
from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from tagwatch.api.schemas_alerts import without_location
from tagwatch.api.security import User, current_user
from tagwatch.store import alerts as alerts_store
from tagwatch.store.alerts import OutboxEvent

log = logging.getLogger("tagwatch.api.stream")
router = APIRouter(prefix="/alerts", tags=["alerts"])

POLL_S = 0.5
AUTH_TIMEOUT_S = 5.0
RECHECK_S = 30.0
BATCH = 200
GAP_WAIT_S = 60.0  # how long an id missing below the cursor is looked for again
GAP_LOOKBACK = 500  # ids below the start cursor checked for stragglers
MAX_GAPS = 10_000
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def event_message(row: OutboxEvent) -> dict[str, Any]:
    outbox_id, created_at, event, alert_id, payload = (
        row.id,
        row.created_at,
        row.event,
        row.alert_id,
        row.payload,
    )
    assert created_at is not None  # only visible rows are sent, and they carry their content
    alert = {k: val for k, val in (payload or {}).items() if k not in ("lat", "lon", "event")}
    alert["details"] = without_location(alert.get("details"))
    return {
        "type": "alert",
        "id": outbox_id,
        "event": event,
        "at": created_at.isoformat(),
        "alert_id": alert_id,
        "alert": alert,
    }


class Cursor:
    """The highest outbox id read, and the ids below it not seen yet (with when they went
    missing)."""

    def __init__(self, after: int, missing: list[int]) -> None:
        self.after = after
        now = time.monotonic()
        self.gaps: dict[int, float] = dict.fromkeys(missing, now)

    def advance(self, ids: list[int]) -> None:
        now = time.monotonic()
        for outbox_id in ids:
            if outbox_id in self.gaps:
                del self.gaps[outbox_id]
            elif outbox_id > self.after:
                for missing in range(self.after + 1, outbox_id):
                    self.gaps[missing] = now
                self.after = outbox_id
        for outbox_id, since in list(self.gaps.items()):
            if now - since > GAP_WAIT_S:
                del self.gaps[outbox_id]
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[min(self.gaps)]


async def _authenticate(websocket: WebSocket, token: str | None) -> User | None:
    if not token:
        return None
    try:
        # current_user reads only the app state (settings, pool) from its request.
        return await current_user(cast(Request, websocket), token)
    except HTTPException:
        return None


async def _first_token(websocket: WebSocket) -> str | None:
    """The token from the first message, or None when it does not come in time."""
    with anyio.move_on_after(AUTH_TIMEOUT_S):
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            first = json.loads(message.get("text") or message.get("bytes") or b"")
        except ValueError:
            return None
        if isinstance(first, dict) and isinstance(first.get("token"), str):
            return str(first["token"])
    return None


async def _start(websocket: WebSocket, after: int | None) -> Cursor:
    async with websocket.app.state.pool.connection() as conn:
        if after is None:
            after = await alerts_store.outbox_head(conn)
        missing = await alerts_store.outbox_missing(conn, after, GAP_LOOKBACK)
    return Cursor(after, missing)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=code, reason=reason)


async def _feed(websocket: WebSocket, user: User, token: str, cursor: Cursor) -> None:
    """Poll and send until the client leaves or the token stops being valid."""
    checked = time.monotonic()
    while True:
        if time.monotonic() - checked > RECHECK_S:
            refreshed = await _authenticate(websocket, token)
            if refreshed is None:
                await _close(websocket, POLICY_VIOLATION, "token expired or revoked")
                return
            user, checked = refreshed, time.monotonic()
        async with websocket.app.state.pool.connection() as conn:
            rows = await alerts_store.outbox_page(
                conn, user.region_filter(), cursor.after, sorted(cursor.gaps), BATCH
            )
        for row in rows:
            if row.visible:
                await websocket.send_json(event_message(row))
        cursor.advance([row.id for row in rows])
        if len(rows) < BATCH and not await _client_stays(websocket, POLL_S):
            return


async def _client_stays(websocket: WebSocket, seconds: float) -> bool:
    """Wait ``seconds``, reading (and ignoring) what the client sends; False when it left."""
    with anyio.move_on_after(seconds):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return False
    return True


@router.websocket("/stream")
async def alert_stream(websocket: WebSocket) -> None:
    """Live alert events; see the module docstring for the protocol."""
    await websocket.accept()
    if "token" in websocket.query_params:
        # refused even when valid: the URL, token included, is already in some proxy's log
        await _close(
            websocket, POLICY_VIOLATION, "send the token as the first message, not in the URL"
        )
        return
    raw_after = websocket.query_params.get("after")
    after: int | None = None
    if raw_after is not None:
        if not raw_after.isdigit() or len(raw_after) > 18:
            await _close(websocket, POLICY_VIOLATION, "after must be an outbox id")
            return
        after = int(raw_after)
    try:
        token = await _first_token(websocket)
        user = await _authenticate(websocket, token)
        if user is None or token is None:
            await _close(websocket, POLICY_VIOLATION, "not authenticated")
            return
        cursor = await _start(websocket, after)
        await websocket.send_json({"type": "ready", "cursor": cursor.after})
        await _feed(websocket, user, token, cursor)
    except WebSocketDisconnect:
        return
    except psycopg.OperationalError as exc:
        log.warning("alert stream: database unavailable: %s", exc)
        await _close(websocket, TRY_AGAIN_LATER, "database unavailable; reconnect with ?after=")
