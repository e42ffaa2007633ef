"""HTTP intake for phones: OwnTracks in HTTP mode (`POST /owntracks`) and Traccar Client's OsmAnd
protocol (`GET|POST /osmand/{token}`). No user token: the device authenticates itself.

The API only authenticates and relays. The request's body (and, for OsmAnd, its parameters) is
published unchanged at QoS 1 on the topic the phone would use over MQTT (ingest/relay.py), and
ingest decodes, validates, stores exactly once, dead-letters and rate-limits it like every other
message: the same reasons, the same quarantine, the same engine. 200 means the broker has the
message; 503 means it could not take it in time, and the phone keeps the fix and retries (a
retried fix that did arrive is stored once: fixes are unique on device, time and sequence).

Authentication (docs/phones.md, docs/security.md):

* OwnTracks: HTTP Basic with the device id and its MQTT password (the app's one set of
  credentials, whatever its mode); the message goes on the phone's registered OwnTracks topic,
  whatever `X-Limit-U` / `X-Limit-D` say (they are names the app chose, not identities).
* OsmAnd: the `id` parameter (or the JSON `device_id`) names the device and the token in the URL
  path authenticates it. The token travels in the path, not in a `?token=` parameter, because
  the Android client appends its parameters to the configured URL and the current client's
  configuration links keep only the URL's origin and path.

A wrong secret is 401 in constant time (ingest/device_secrets.py) and is counted like a failed
login (api/login_throttle.py: per client address with exponential backoff, per device a budget;
over either, 429 with Retry-After). A right secret is never refused by the throttle: phones share
carrier NAT addresses with strangers, and someone else's guessing must not cost a monitored
phone its fixes (the secrets are 144 bits or more, so a correct guess is not a risk to weigh).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response

from tagwatch.api import login_throttle
from tagwatch.api.client_address import client_address
from tagwatch.api.login_throttle import LoginPolicy, Refusal, RefusalCache
from tagwatch.ingest.decode import DEVICE_ID
from tagwatch.ingest.device_secrets import secret_matches
from tagwatch.ingest.osmand import JSON, QUERY, osmand_topic
from tagwatch.ingest.relay import IntakeRelay, RelayUnavailable
from tagwatch.store import commands, devices
from tagwatch.store.devices import HttpCredential

log = logging.getLogger("tagwatch.api.intake")
router = APIRouter(tags=["device intake"])

# Device requests waiting for a PUBACK at once per process (each holds a worker thread).
RELAY_SLOTS = 32
# The throttle's name for a device: its budget is kept beside users' (an admin who named a user
# "device:x" would make them share one budget, which is never a lock).
THROTTLE_PREFIX = "device:"
BASIC_REALM = 'Basic realm="tagwatch devices", charset="UTF-8"'

DEVICE_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the request cannot be read (not UTF-8, JSON without device_id...)"},
    401: {"description": "no device credentials, or wrong ones"},
    403: {"description": "the device is registered for another protocol"},
    413: {"description": "the body is larger than the contract's 256 KiB"},
    429: {"description": "too many failed attempts from this address or for this device"},
    503: {"description": "the broker did not take the message in time: retry later"},
}


async def pending_commands(request: Request, device_id: str) -> list[dict[str, Any]]:
    """The commands due to a phone, as the OwnTracks apps' own objects (e.g.
    ``{"_type": "cmd", "action": "reportLocation"}``), for the answer to its post: an app in
    HTTP mode reads commands only there (booklet docs/tech/http.md). Taken, and marked sent on
    the ``http`` channel, after the broker has the position, on the operator-action pool in a
    worker thread (``store.commands`` is synchronous, like the dispatcher's sender). Only
    OwnTracks reads its answer; Traccar Client ignores what it gets back."""
    pool = request.app.state.action_pool

    def take() -> list[dict[str, Any]]:
        with pool.connection() as conn:
            return commands.take_pending_for_http(conn, device_id)

    return await anyio.to_thread.run_sync(take)


# ---------------------------------------------------------------------------- plumbing


def _relay(request: Request) -> IntakeRelay:
    """The process's broker connection, made on the first device request (so an API without
    a reachable broker still starts and serves operators)."""
    state = request.app.state
    lock: threading.Lock = state.intake_lock
    with lock:
        relay: IntakeRelay | None = getattr(state, "intake_relay", None)
        if relay is None:
            settings = state.settings
            relay = state.intake_relay = IntakeRelay(
                settings.mqtt_api_url, settings.intake_publish_timeout_s
            )
        return relay


async def _publish(request: Request, topic: str, payload: bytes) -> None:
    state = request.app.state
    try:
        relay = _relay(request)
        async with state.intake_slots:
            await anyio.to_thread.run_sync(relay.publish, topic, payload)
    except (RelayUnavailable, OSError, ValueError) as exc:
        log.warning("HTTP intake could not relay to %s: %s", topic, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"the broker did not take the message ({exc}); retry later",
            headers={"Retry-After": "10"},
        ) from exc


async def _body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it passes the contract's payload limit."""
    limit = int(request.app.state.settings.max_payload_bytes)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, detail=f"the body is over {limit} bytes"
    )


def _unauthorized(detail: str, basic: bool) -> HTTPException:
    headers = {"WWW-Authenticate": BASIC_REALM} if basic else None
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=headers)


def _refusals(request: Request) -> RefusalCache:
    state = request.app.state
    cache: RefusalCache | None = getattr(state, "device_refusals", None)
    if cache is None:
        cache = state.device_refusals = RefusalCache()
    return cache


async def _authenticate(
    request: Request, device_id: str, secret: str, *, basic: bool
) -> HttpCredential:
    """The device, when ``secret`` is its own; else 401 (counted) or 429."""
    found = None
    if DEVICE_ID.match(device_id):
        async with request.app.state.pool.connection() as conn:
            found = await devices.http_credential(conn, device_id)
    else:
        device_id = device_id[:64]
    if secret_matches(secret, found.secret_sha256 if found else None):
        assert found is not None
        return found
    await _count_failure(request, device_id)
    raise _unauthorized("unknown device or wrong secret", basic)


async def _count_failure(request: Request, device_id: str) -> None:
    """Charge the failed attempt to the address and the device (api/login_throttle.py), or
    answer 429 when either has no attempts left."""
    state = request.app.state
    address = client_address(request, getattr(state.settings, "trusted_proxies", ""))
    name = f"{THROTTLE_PREFIX}{device_id}"
    cached = _refusals(request).refusal(address, name)
    if cached is not None:
        raise cached.http()
    policy = LoginPolicy.from_settings(state.settings)
    async with state.pool.connection() as conn:
        outcome = await login_throttle.reserve(conn, address, name, policy)
        if isinstance(outcome, Refusal):
            _refusals(request).remember(address, name, outcome)
            raise outcome.http()
        await login_throttle.failed(conn, outcome, policy)


# ---------------------------------------------------------------------------- OwnTracks


def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise _unauthorized("HTTP Basic authentication with the device id is required", True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthorized("malformed Basic credentials", True) from exc
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        raise _unauthorized("malformed Basic credentials", True)
    return username, password


@router.post("/owntracks", responses=DEVICE_ANSWERS)
async def owntracks_http(request: Request) -> JSONResponse:
    """For OwnTracks phones in HTTP mode (no user token: HTTP Basic with the device id and its
    MQTT password). The body, any OwnTracks JSON message, is relayed to the phone's own topic;
    the answer is the JSON array the apps expect (`[]`, or commands for the phone)."""
    username, password = _basic_credentials(request)
    device = await _authenticate(request, username, password, basic=True)
    if device.owntracks_topic is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"device {device.id!r} is not an OwnTracks phone"
        )
    body = await _body(request)
    await _publish(request, device.owntracks_topic, body)
    return JSONResponse(await pending_commands(request, device.id))


# ---------------------------------------------------------------------------- OsmAnd


def _is_json(request: Request) -> bool:
    """Traccar's own test: the content type starts with application/json."""
    return request.headers.get("content-type", "").lower().startswith("application/json")


def _json_device_id(body: bytes) -> str:
    try:
        root = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="the body is not JSON") from exc
    claimed = root.get("device_id") if isinstance(root, dict) else None
    if not isinstance(claimed, str) or not claimed:
        detail = "no device_id: it names the device the URL's token authenticates"
        raise _unauthorized(detail, False)
    return claimed


def _query_device_id(parameters: bytes) -> str:
    try:
        pairs = parse_qsl(parameters.decode("utf-8"), keep_blank_values=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail="the parameters are not UTF-8"
        ) from exc
    claimed = {value for key, value in pairs if key in {"id", "deviceid"}}
    if len(claimed) > 1:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="more than one device id")
    if not claimed:
        raise _unauthorized("no id: it names the device the URL's token authenticates", False)
    return claimed.pop()


async def _osmand(token: str, request: Request) -> Response:
    body = await _body(request)
    if _is_json(request):
        shape, payload, claimed = JSON, body, _json_device_id(body)
    else:
        query = request.scope.get("query_string", b"")
        payload = b"&".join(part for part in (query, body) if part)
        shape, claimed = QUERY, _query_device_id(payload)
    device = await _authenticate(request, claimed, token, basic=False)
    if not device.osmand:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"device {device.id!r} is not registered as an OsmAnd phone",
        )
    await _publish(request, osmand_topic(device.id, shape), payload)
    return Response(status_code=status.HTTP_200_OK)


@router.get("/osmand/{token}", responses=DEVICE_ANSWERS)
async def osmand_get(token: str, request: Request) -> Response:
    """For Traccar Client (the OsmAnd protocol; no user token: the token in the path
    authenticates the device its `id` names), parameters in the query string. Answered 200
    with no body, as Traccar does."""
    return await _osmand(token, request)


@router.post("/osmand/{token}", responses=DEVICE_ANSWERS)
async def osmand_post(token: str, request: Request) -> Response:
    """For Traccar Client: parameters in the query string or a form body, or the JSON body of
    Traccar Client 9 and later (`Content-Type: application/json`). Answered 200 with no body."""
    return await _osmand(token, request)
