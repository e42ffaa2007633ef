"""`tagwatch services`: the private PostgreSQL + Mosquitto of development and the tests."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tagwatch.cli.common import DEFAULT_DIR, DirOption

services_app = typer.Typer(no_args_is_help=True, help="Private PostgreSQL + Mosquitto.")


@services_app.command("up")
def services_up(
    directory: DirOption = DEFAULT_DIR,
    plain_devices: Annotated[
        bool, typer.Option(help="also a plain-TCP device listener on loopback (development)")
    ] = False,
) -> None:
    """Start (or reuse) private PostgreSQL and Mosquitto for development; write DIR/env."""
    from tagwatch import services  # noqa: PLC0415 - keep CLI start-up light

    state = services.up(directory, plain_devices=plain_devices)
    typer.echo(f"PostgreSQL on 127.0.0.1:{state.pg_port} (timescaledb: {state.timescaledb})")
    typer.echo(
        f"Mosquitto  on 127.0.0.1:{state.mqtt_port} for devices (TLS, per-device accounts"
        f" pinned to their client id), 127.0.0.1:{state.mqtt_service_port} for services"
        " (client certificates)"
    )
    if state.mqtt_plain_port:
        typer.echo(f"           127.0.0.1:{state.mqtt_plain_port} for devices without TLS (dev)")
    typer.echo(f"CA to pin: {state.env()['TAGWATCH_MQTT_DEVICE_URL'].split('?ca=')[1]}")
    typer.echo(f"settings in {directory.resolve() / 'env'}")


@services_app.command("down")
def services_down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop the private services (their data stays in DIR)."""
    from tagwatch import services  # noqa: PLC0415

    services.down(directory)
    typer.echo("stopped")


@services_app.command("status")
def services_status(directory: DirOption = DEFAULT_DIR) -> None:
    from tagwatch import services  # noqa: PLC0415

    typer.echo(json.dumps(services.status(directory), indent=2))
