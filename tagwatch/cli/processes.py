"""The long-running processes: `tagwatch ingest`, `api`, `dispatch`, and `run` (all of them
together)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Annotated

import typer

from tagwatch.cli.common import sound_settings


def ingest(
    worker: Annotated[str | None, typer.Option(help="name for counters and logs")] = None,
) -> None:
    """MQTT in → decode → one transaction per batch → acknowledge."""
    from tagwatch.geofence import warm_up  # noqa: PLC0415
    from tagwatch.ingest.service import IngestService  # noqa: PLC0415

    # compile the geofence kernel before taking traffic, not in the first batch's transaction
    s = sound_settings("ingest")
    warm_up()
    service = IngestService(s, worker=worker)

    def _stop(_signum: int, _frame: object) -> None:
        service.stop_requested.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.run()
    typer.echo(
        f"ingest stopped: {service.totals.fixes_stored} fixes stored, "
        f"{service.totals.fix_duplicates} duplicates, {service.totals.dead_letters} dead letters"
    )
    if service.failure is not None:
        raise typer.Exit(1)  # a supervisor restarts a worker that failed, not one told to stop


def api(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the HTTP API (and, later, the console)."""
    import uvicorn  # noqa: PLC0415

    from tagwatch.api.app import create_app  # noqa: PLC0415

    s = sound_settings("api")
    # proxy_headers off: the client address (login throttling, audit) comes from the socket, or
    # from X-Forwarded-For only when TAGWATCH_TRUSTED_PROXIES names the proxy (api/client_address)
    uvicorn.run(
        create_app(s),
        host=host or s.api_host,
        port=port or s.api_port,
        log_level="info",
        proxy_headers=False,
    )


def run(
    simulate_devices: Annotated[
        int, typer.Option("--simulate", help="simulated devices to run beside the platform")
    ] = 0,
    interval: Annotated[float, typer.Option(help="simulated fix interval, seconds")] = 5.0,
) -> None:
    """Ingest, dispatcher and API together (and N simulated devices), until Ctrl-C."""
    sound_settings("run")
    exe = [sys.executable, "-m", "tagwatch"]
    children = [
        subprocess.Popen([*exe, "ingest"]),
        subprocess.Popen([*exe, "dispatch"]),
        subprocess.Popen([*exe, "api"]),
    ]
    if simulate_devices:
        children.append(
            subprocess.Popen(
                [*exe, "simulate", "--devices", str(simulate_devices), "--interval", str(interval)]
            )
        )
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    failed = [
        " ".join(map(str, c.args)) if isinstance(c.args, list) else str(c.args)
        for c in children
        if c.returncode not in (0, -signal.SIGTERM, None)
    ]
    if failed and not stopping:
        typer.echo(f"stopped because a process exited: {failed}", err=True)
        raise typer.Exit(1)


def dispatch() -> None:
    """Deliver alert notifications (signed webhooks, MQTT em/v1/alerts/{region}) until stopped."""
    from tagwatch.alerts.dispatcher import main as dispatch_main  # noqa: PLC0415

    stats = dispatch_main(sound_settings("dispatch"))
    typer.echo(
        f"dispatch stopped: {stats.delivered} delivered, {stats.retried} retries scheduled, "
        f"{stats.failed} failed"
    )
