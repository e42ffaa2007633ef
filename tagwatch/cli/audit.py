"""`tagwatch audit`: the hash-chained audit log of location reads."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tagwatch.cli.common import settings

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log of location reads.")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain: exit 0 with the count when intact, 1 naming the first bad row."""
    from tagwatch.audit_verify import run_verify  # noqa: PLC0415

    code = run_verify(settings().database_url, typer.echo)
    if code:
        raise typer.Exit(code)


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    subject: Annotated[int | None, typer.Option(help="only this subject id")] = None,
    username: Annotated[str | None, typer.Option(help="only this user")] = None,
    action: Annotated[str | None, typer.Option(help="position, track, alert_detail, ...")] = None,
) -> None:
    """The latest audit rows, newest first, one JSON object a line."""
    from tagwatch.audit_verify import recent  # noqa: PLC0415

    for row in recent(settings().database_url, limit, subject, username, action):
        typer.echo(json.dumps(row, default=str))
