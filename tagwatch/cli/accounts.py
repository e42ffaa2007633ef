"""`tagwatch user` and `tagwatch device`: operator accounts, and devices with their broker
credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from tagwatch.cli.common import settings

if TYPE_CHECKING:
    from tagwatch.ingest.device_broker import DeviceBroker
    from tagwatch.settings import Settings

user_app = typer.Typer(no_args_is_help=True, help="Operator accounts.")
device_app = typer.Typer(no_args_is_help=True, help="Devices and their broker credentials.")

EXAMPLE_FIX = '''-m "{\\"ts\\": $(date +%s), \\"lat\\": -33.92, \\"lon\\": 18.42, \\"acc\\": 8}"'''
EXAMPLE_OWNTRACKS = (
    """-m "{\\"_type\\": \\"location\\", \\"tst\\": $(date +%s), \\"lat\\": -33.92, """
    '''\\"lon\\": 18.42, \\"acc\\": 8, \\"tid\\": \\"p1\\"}"'''
)


def try_publish_line(
    broker: DeviceBroker, device_id: str, password: str, owntracks_topic: str | None
) -> str:
    """A `mosquitto_pub` line that publishes one fix as the device would, over TLS: a tag's
    fix on `em/v1/{id}/fix`, or for a phone an OwnTracks `location` on its own topic (a tag
    payload there is a dead letter)."""
    tls = f"--cafile {broker.ca_file} " if broker.tls and broker.ca_file else ""
    topic = owntracks_topic or f"em/v1/{device_id}/fix"
    payload = EXAMPLE_OWNTRACKS if owntracks_topic else EXAMPLE_FIX
    return (
        f"mosquitto_pub -h {broker.host} -p {broker.port} {tls}-u {device_id} "
        f"-i {device_id} -P '{password}' -q 1 -t {topic} {payload}"
    )


def _device_http_base(s: Settings) -> str:
    """Where devices reach the API over HTTP (OsmAnd and OwnTracks HTTP mode)."""
    return (s.device_http_url or f"http://{s.api_host}:{s.api_port}").rstrip("/")


@contextmanager
def _broker_refusal() -> Iterator[None]:
    """A broker that refuses the change ends the command with its reason (exit 1)."""
    from tagwatch.ingest.broker_accounts import BrokerAdminError  # noqa: PLC0415

    try:
        yield
    except BrokerAdminError as exc:
        typer.echo(f"refused by the broker: {exc}", err=True)
        raise typer.Exit(1) from exc


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, supervisor, operator or tracer")] = "operator",
    region: Annotated[list[str] | None, typer.Option(help="repeat; '*' for every region")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="TAGWATCH_NEW_PASSWORD", help="else prompted")
    ] = None,
) -> None:
    """Create or update a user (argon2 hash stored)."""
    import psycopg  # noqa: PLC0415

    from tagwatch.api.security import ROLES, hash_password  # noqa: PLC0415
    from tagwatch.store.users import save_user  # noqa: PLC0415

    if role not in ROLES:
        typer.echo(f"role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    secret = password or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(secret) < 8:
        typer.echo("password must have at least 8 characters", err=True)
        raise typer.Exit(2)
    with psycopg.connect(settings().database_url) as conn:
        save_user(conn, username, hash_password(secret), role, region or ["*"])
    typer.echo(f"user {username} ({role}, regions {', '.join(region or ['*'])}) saved")


@device_app.command("add")
def device_add(
    device_id: str,
    kind: Annotated[str, typer.Option(help="tag, phone or victim_phone")] = "tag",
    owntracks_topic: Annotated[str | None, typer.Option(help="phones only")] = None,
    subject: Annotated[
        str | None, typer.Option(help="also create a subject of this name holding the device")
    ] = None,
    region: Annotated[str, typer.Option(help="region of the new subject")] = "demo",
    osmand: Annotated[
        bool,
        typer.Option(help="phones running Traccar Client (OsmAnd over HTTP): a URL token, no MQTT"),
    ] = False,
) -> None:
    """Register a device and print its credentials (the password or token is shown once)."""
    import psycopg  # noqa: PLC0415

    from tagwatch.ingest.broker_accounts import reserved_device_id  # noqa: PLC0415
    from tagwatch.ingest.device_accounts import device_accounts  # noqa: PLC0415
    from tagwatch.ingest.device_broker import device_broker  # noqa: PLC0415
    from tagwatch.ingest.payload_keys import PHONE_KINDS, new_payload_key  # noqa: PLC0415
    from tagwatch.ingest.provisioning import provision_device  # noqa: PLC0415
    from tagwatch.store.devices import add_assignment  # noqa: PLC0415
    from tagwatch.store.subjects import add_subject, ensure_region  # noqa: PLC0415

    reserved = reserved_device_id(device_id)
    if reserved:
        typer.echo(f"refused: {reserved}", err=True)
        raise typer.Exit(2)
    if osmand and (kind not in PHONE_KINDS or owntracks_topic):
        typer.echo(
            "refused: --osmand is for phones running Traccar Client (no OwnTracks topic)", err=True
        )
        raise typer.Exit(2)
    if not osmand and (kind in PHONE_KINDS) != (owntracks_topic is not None):
        typer.echo(
            "refused: a phone needs --owntracks-topic owntracks/{user}/{device} (the topic its"
            " OwnTracks app publishes on, docs/phones.md), or --osmand; a tag has neither",
            err=True,
        )
        raise typer.Exit(2)
    s = settings()
    subject_id: int | None = None
    encryption_key, sealed = new_payload_key("tag" if osmand else kind, s.webhook_secret_key)
    with psycopg.connect(s.database_url) as conn:
        password = provision_device(
            conn,
            device_accounts(s),
            device_id,
            kind,
            owntracks_topic,
            payload_key_sealed=sealed,
            osmand=osmand,
        )
        if subject:
            ensure_region(conn, region, region)
            subject_id = add_subject(conn, name=subject, region_id=region)
            since = datetime.now(UTC) - timedelta(days=1)
            add_assignment(conn, device_id, subject_id, "offender", since, None)
    api = _device_http_base(s)
    if osmand:
        typer.echo(
            json.dumps(
                {
                    "device_id": device_id,
                    "osmand_url": f"{api}/osmand/{password}",
                    "subject_id": subject_id,
                },
                indent=2,
            )
        )
        typer.echo(
            f"# Traccar Client (docs/phones.md): device identifier {device_id}, server URL the"
            " osmand_url above (its token is shown once)",
            err=True,
        )
        return
    broker = device_broker(s)
    typer.echo(
        json.dumps(
            {
                "device_id": device_id,
                "username": device_id,
                "client_id": device_id,
                "password": password,
                "broker": broker.url,
                "ca_file": broker.ca_file,
                "subject_id": subject_id,
                **({"encryption_key": encryption_key} if kind in PHONE_KINDS else {}),
                "try": try_publish_line(broker, device_id, password, owntracks_topic),
            },
            indent=2,
        )
    )
    if broker.ca_pem:
        typer.echo("# the CA the device must pin (TLS):", err=True)
        typer.echo(broker.ca_pem.strip(), err=True)
    if owntracks_topic:
        typer.echo(
            f"# OwnTracks app (docs/phones.md): mode MQTT, host {broker.host}, port"
            f" {broker.port}, TLS on with the CA above, user name {device_id}, the password"
            f" above, client ID {device_id} (the broker refuses any other), base topic"
            f" {owntracks_topic}"
            + (
                f", encryption key (Payload encryption / encryptionKey) {encryption_key}"
                if encryption_key
                else ", no payload encryption key (TAGWATCH_WEBHOOK_SECRET_KEY is not set)"
            )
            + f"; or mode HTTP, URL {api}/owntracks with the same user name and password",
            err=True,
        )


@device_app.command("rotate")
def device_rotate(device_id: str) -> None:
    """Give a device a new secret (shown once) and tell the broker (TAGWATCH_BROKER_KIND): the
    old one stops working; a revoked device gets its access back. The API's
    POST /devices/{id}/secret, audited the same way."""
    import getpass  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from tagwatch.ingest.device_accounts import device_accounts  # noqa: PLC0415
    from tagwatch.ingest.device_broker import device_broker  # noqa: PLC0415
    from tagwatch.ingest.provisioning import rotate_device  # noqa: PLC0415

    s = settings()
    with psycopg.connect(s.database_url) as conn, _broker_refusal():
        found = rotate_device(conn, device_accounts(s), device_id, f"cli:{getpass.getuser()}")
    if found is None:
        typer.echo(f"no device {device_id}", err=True)
        raise typer.Exit(1)
    row, secret = found
    if row.osmand:
        api = _device_http_base(s)
        typer.echo(json.dumps({"device_id": device_id, "osmand_url": f"{api}/osmand/{secret}"}))
        return
    broker = device_broker(s)
    typer.echo(
        json.dumps(
            {
                "device_id": device_id,
                "username": device_id,
                "client_id": device_id,
                "password": secret,
                "broker": broker.url,
                "try": try_publish_line(broker, device_id, secret, row.owntracks_topic),
            },
            indent=2,
        )
    )


@device_app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Lock a device out (lost, stolen, retired): its secret is withdrawn, so it can neither
    connect to the broker nor post over HTTP; its row and history stay. `device rotate` gives it
    a new secret. The API's DELETE /devices/{id}/secret, audited the same way."""
    import getpass  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from tagwatch.ingest.device_accounts import device_accounts  # noqa: PLC0415
    from tagwatch.ingest.provisioning import revoke_device  # noqa: PLC0415

    s = settings()
    with psycopg.connect(s.database_url) as conn, _broker_refusal():
        row = revoke_device(conn, device_accounts(s), device_id, f"cli:{getpass.getuser()}")
    if row is None:
        typer.echo(f"no device {device_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"device_id": device_id, "revoked": True}))


@device_app.command("command")
def device_command(
    device_id: str,
    action: Annotated[
        str,
        typer.Argument(
            help="locate_now, set_interval, vibrate, beep, message or set_configuration"
        ),
    ],
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            help="NAME=VALUE, repeatable; VALUE is read as JSON when it parses"
            " (interval_s=15 duration_s=600, text=\"...\", configuration='{...}')",
        ),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(help="seconds the command may wait (default TAGWATCH_COMMAND_TTL_S)"),
    ] = None,
) -> None:
    """Queue a command to a device (the API's POST /devices/{id}/commands, audited). The
    dispatcher (`tagwatch dispatch`) sends it; `GET /devices/{id}/commands` shows its state."""
    import getpass  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from tagwatch.alerts.device_commands import CommandRefused  # noqa: PLC0415
    from tagwatch.store.commands import queue_command_sync  # noqa: PLC0415

    args: dict[str, object] = {}
    for item in arg or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            typer.echo(f"--arg must be NAME=VALUE, not {item!r}", err=True)
            raise typer.Exit(2)
        try:
            args[name] = json.loads(raw)
        except ValueError:
            args[name] = raw
    s = settings()
    with psycopg.connect(s.database_url) as conn:
        try:
            command, kind = queue_command_sync(
                conn,
                device_id,
                action,
                args,
                (f"cli:{getpass.getuser()}", "admin"),
                expires_in or s.command_ttl_s,
            )
        except (LookupError, CommandRefused) as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(
        json.dumps(
            {
                "command_id": command.id,
                "device_id": device_id,
                "kind": kind,
                "type": command.type,
                "args": command.args,
                "state": command.state,
                "expires_at": command.expires_at.isoformat(),
            }
        )
    )


@device_app.command("unassign")
def device_unassign(
    device_id: str,
    at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
            help="when the device left its holder (ISO 8601, UTC unless an offset is given);"
            " default now",
        ),
    ] = None,
) -> None:
    """End the device's current assignment (order over, tag taken off or swapped): no rule
    judges it for that subject any more, its open device alerts are cleared (reason
    assignment_ended) and the change is audited. The same store function as the API's
    PATCH /subjects/{id}/assignments/{assignment_id}."""
    import getpass  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from tagwatch.store.devices import (  # noqa: PLC0415
        AssignmentRefused,
        assignment_at,
        end_assignment,
    )

    when = None if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    with psycopg.connect(settings().database_url) as conn:
        found = assignment_at(conn, device_id, when)
        if found is None:
            typer.echo(f"device {device_id} is not assigned (in stock)", err=True)
            raise typer.Exit(1)
        assignment_id, subject_id = found
        try:
            ended = end_assignment(
                conn, subject_id, assignment_id, when, (f"cli:{getpass.getuser()}", "admin")
            )
        except AssignmentRefused as exc:
            typer.echo(f"refused ({exc.reason}): {exc.message}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(
        json.dumps(
            {
                "assignment_id": ended.id,
                "device_id": ended.device_id,
                "subject_id": ended.subject_id,
                "to": ended.to.isoformat(),
                "alerts_cleared": ended.alerts_cleared,
            }
        )
    )
