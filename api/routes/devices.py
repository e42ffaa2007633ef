"""Devices: creating one provisions its broker account and shows its secret (and a phone's
OwnTracks encryption key) exactly once; rotating shows a new secret once; revoking locks the
device out. The broker side goes through the port ingest/device_accounts.py, whose adapter
TAGWATCH_BROKER_KIND chooses: Mosquitto's dynamic security, or on EMQX nothing beyond the row
(EMQX authenticates against it)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg.errors import UniqueViolation

from tagwatch.api import audit
from tagwatch.api.deps import Conn, may_read_victims
from tagwatch.api.schemas import DeviceCreate, DeviceCredentials, DevicePublic
from tagwatch.api.security import CurrentUser, User, allow
from tagwatch.ingest.broker_accounts import BrokerAdminError, device_topics, new_device_password
from tagwatch.ingest.device_accounts import device_accounts
from tagwatch.ingest.device_broker import device_broker
from tagwatch.ingest.device_secrets import new_osmand_token, secret_digest
from tagwatch.ingest.payload_keys import new_payload_key
from tagwatch.store import devices
from tagwatch.store.devices import Device

router = APIRouter(prefix="/devices", tags=["devices"])


def _device(row: Device, user: User | None = None) -> DevicePublic:
    # A victim's phone topic may carry her name: only those who may read victims' data see it.
    hide_topic = user is not None and row.kind == "victim_phone" and not may_read_victims(user)
    return DevicePublic(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]  # the CHECK constraint holds it to DeviceKind
        owntracks_topic=None if hide_topic else row.owntracks_topic,
        expected_interval_s=row.expected_interval_s,
        created_at=row.created_at,
        osmand=row.osmand,
    )


# A device held now by a subject outside the caller's regions is invisible to them (it answers
# like a missing one, see store.devices); devices in stock are visible to all, to be assigned.
@router.get("", response_model=list[DevicePublic])
async def list_devices(
    conn: Conn,
    _user: CurrentUser,
    limit: int = Query(default=100, ge=1, le=1000),
    after_id: str = Query(default="", max_length=64, description="cursor: last id of the page"),
) -> list[DevicePublic]:
    rows = await devices.list_devices(conn, _user.region_filter(), after_id, limit)
    return [_device(r, _user) for r in rows]


@router.get("/{device_id}", response_model=DevicePublic)
async def read_device(device_id: str, conn: Conn, _user: CurrentUser) -> DevicePublic:
    row = await devices.visible_device(conn, device_id, _user.region_filter())
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
    """The row and the broker account appear together or not at all. The secret shown once is
    the MQTT password (also an OwnTracks phone's HTTP mode password), or for an OsmAnd phone the
    token of its Traccar Client URL, which has no broker account (ingest/device_secrets.py)."""
    secret = new_osmand_token() if body.osmand else new_device_password()
    # an OsmAnd phone has no OwnTracks app, so no payload encryption key
    kind_for_key = "tag" if body.osmand else body.kind
    passphrase, sealed = new_payload_key(
        kind_for_key, request.app.state.settings.webhook_secret_key
    )
    try:
        row = await devices.create_device(
            conn,
            body.id,
            body.kind,
            body.owntracks_topic,
            body.expected_interval_s,
            osmand=body.osmand,
            secret_sha256=secret_digest(secret),
            payload_key_sealed=sealed,
        )
    except UniqueViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="device id or OwnTracks topic already registered"
        ) from exc
    return await _credentials(request, row, secret, body.owntracks_topic, passphrase, "create")


async def _credentials(
    request: Request,
    row: Device,
    secret: str,
    owntracks_topic: str | None,
    passphrase: str | None,
    action: str,
) -> DeviceCredentials:
    """Tell the broker (not for an OsmAnd phone: no broker account) and answer the secret once.
    A refusal is a 503 and the caller's transaction rolls the row back with it."""
    settings = request.app.state.settings
    base = (settings.device_http_url or str(request.base_url)).rstrip("/")
    broker = device_broker(settings)
    device = _device(row)
    if row.osmand:
        return DeviceCredentials(
            **device.model_dump(),
            mqtt_username=None,
            mqtt_password=None,
            mqtt_client_id=None,
            broker_url=broker.url,
            ca_pem=None,
            publish_topics=[],
            osmand_url=f"{base}/osmand/{secret}",
        )
    accounts = device_accounts(settings)
    call = accounts.create_device if action == "create" else accounts.rotate_device
    try:
        await anyio.to_thread.run_sync(call, row.id, secret, owntracks_topic)
    except BrokerAdminError as exc:
        # The transaction rolls back with the error, so no device exists without its account.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"broker provisioning failed: {exc}"
        ) from exc
    return DeviceCredentials(
        **device.model_dump(),
        mqtt_username=row.id,
        mqtt_password=secret,
        mqtt_client_id=row.id,
        broker_url=broker.url,
        ca_pem=broker.ca_pem,
        publish_topics=device_topics(row.id, owntracks_topic),
        owntracks_http_url=f"{base}/owntracks" if owntracks_topic else None,
        encryption_key=passphrase,
    )


def _missing(device_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"device {device_id!r} not found")


@router.post(
    "/{device_id}/secret",
    response_model=DeviceCredentials,
    dependencies=[allow("admin", "supervisor")],
)
async def rotate_device_secret(
    device_id: str, conn: Conn, user: CurrentUser, request: Request
) -> DeviceCredentials:
    """A new secret, shown once (the MQTT password, or an OsmAnd phone's URL token): the old one
    stops working at the device's next connection or HTTP post. A revoked device gets its
    access back with it. The phone's OwnTracks encryption key is unchanged (not shown again).
    Audited (`device_secret_rotate`)."""
    row = await devices.visible_device(conn, device_id, user.region_filter())
    if row is None:
        raise _missing(device_id)
    secret = new_osmand_token() if row.osmand else new_device_password()
    row = await devices.set_device_secret(
        conn, device_id, secret_digest(secret), user.region_filter()
    )
    if row is None:
        raise _missing(device_id)
    await audit.record(conn, user, "device_secret_rotate", None, device_id=device_id)
    return await _credentials(request, row, secret, row.owntracks_topic, None, "rotate")


@router.delete(
    "/{device_id}/secret",
    status_code=204,
    response_class=Response,
    dependencies=[allow("admin", "supervisor")],
)
async def revoke_device_secret(
    device_id: str, conn: Conn, user: CurrentUser, request: Request
) -> Response:
    """Revoke the device (lost, stolen, retired): its secret is withdrawn, so it can neither
    connect to the broker nor post over HTTP; its row, fixes and assignments stay. Rotating
    the secret again gives it a new one. Audited (`device_secret_revoke`)."""
    row = await devices.set_device_secret(conn, device_id, None, user.region_filter())
    if row is None:
        raise _missing(device_id)
    if not row.osmand:
        accounts = device_accounts(request.app.state.settings)
        try:
            await anyio.to_thread.run_sync(accounts.revoke_device, device_id)
        except BrokerAdminError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"broker revocation failed: {exc}"
            ) from exc
    await audit.record(conn, user, "device_secret_revoke", None, device_id=device_id)
    return Response(status_code=204)
