"""`tagwatch chaos`: faults injected into a real, private platform (tagwatch/chaos/)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

chaos_app = typer.Typer(no_args_is_help=True, help="Fault injection against a private platform.")


@chaos_app.command("db-failover")
def db_failover(
    rate: Annotated[float, typer.Option(min=10.0, help="fixes per second published")] = 2000.0,
    seconds: Annotated[float, typer.Option(min=5.0, help="seconds of publishing")] = 60.0,
    kill_after: Annotated[
        float, typer.Option(min=1.0, help="seconds into the run the primary is killed")
    ] = 20.0,
    violators: Annotated[
        int, typer.Option(min=1, help="devices walking in and out of exclusion zones")
    ] = 20,
    keep: Annotated[bool, typer.Option("--keep", help="keep the directory and its logs")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="figures as JSON at the end")] = False,
) -> None:
    """Kill the PostgreSQL primary of a three-node Patroni cluster while fixes flow; print what
    was published, stored, alerted and notified (needs the patroni and etcd-server packages:
    TAGWATCH_SETUP_CHAOS=1 scripts/setup.sh)."""
    from tagwatch.chaos.cluster import missing_tools  # noqa: PLC0415
    from tagwatch.chaos.db_failover import run  # noqa: PLC0415

    missing = missing_tools()
    if missing:
        typer.echo(
            f"missing {', '.join(missing)}: install with TAGWATCH_SETUP_CHAOS=1 scripts/setup.sh"
            " (apt-get install --no-install-recommends patroni etcd-server)",
            err=True,
        )
        raise typer.Exit(2)
    if not 0 < kill_after < seconds:
        typer.echo("--kill-after must be less than --seconds", err=True)
        raise typer.Exit(2)
    figures = run(rate, seconds, kill_after, violators=violators, keep=keep, echo=typer.echo)
    if as_json:
        typer.echo(json.dumps(figures))
    failed = (
        figures["fixes_lost"]
        or figures["fixes_stored_twice"]
        or figures["alerts_duplicated"]
        or figures["notifications_lost"]
    )
    if failed:
        raise typer.Exit(1)
