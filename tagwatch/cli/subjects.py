"""`tagwatch subject`: what a supervisor sets on a subject from the command line (the same
store functions as the API's PATCH /subjects/{id}, audited the same way)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tagwatch.cli.common import settings

subject_app = typer.Typer(no_args_is_help=True, help="Subjects.")
beacon_app = typer.Typer(
    no_args_is_help=True,
    help="The approved home beacon: the only beacon whose reports count as presence at home.",
)
subject_app.add_typer(beacon_app, name="beacon")


def _show(subject_id: int, approval: tuple[Any, Any, Any]) -> None:
    beacon, by, at = approval
    typer.echo(
        json.dumps(
            {
                "subject_id": subject_id,
                "home_beacon": None
                if beacon is None
                else {"id": beacon, "approved_by": by, "approved_at": at.isoformat()},
            }
        )
    )


def _change(subject_id: int, beacon: str | None) -> None:
    """Approve ``beacon`` (None: clear) as the CLI's user, audited as an admin's change."""
    import getpass  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from tagwatch.store.audit import append_sync  # noqa: PLC0415
    from tagwatch.store.subjects import (  # noqa: PLC0415
        approve_home_beacon,
        home_beacon_approval,
    )

    actor = f"cli:{getpass.getuser()}"
    with psycopg.connect(settings().database_url) as conn:
        before = home_beacon_approval(conn, subject_id)
        if before is None:
            typer.echo(f"no subject {subject_id}", err=True)
            raise typer.Exit(1)
        if before[0] != beacon:
            try:
                approve_home_beacon(conn, subject_id, beacon, actor)
            except psycopg.errors.CheckViolation as exc:
                typer.echo(
                    f"refused: {beacon!r} is not a beacon id ([A-Za-z0-9_.:-]{{1,64}})", err=True
                )
                raise typer.Exit(2) from exc
            action = "home_beacon_approve" if beacon else "home_beacon_clear"
            detail = {"beacon": beacon, "previous": before[0]}
            append_sync(conn, actor, "admin", action, subject_id, detail)
        after = home_beacon_approval(conn, subject_id)
    assert after is not None
    _show(subject_id, after)


@beacon_app.command("set")
def beacon_set(
    subject_id: int,
    beacon: Annotated[str, typer.Argument(help="the beacon unit's serial or advertised id")],
) -> None:
    """Approve BEACON as the subject's home beacon: from now on the tag's beacon_home_enter
    counts as presence at home only when it names it (detail.beacon)."""
    _change(subject_id, beacon)


@beacon_app.command("clear")
def beacon_clear(subject_id: int) -> None:
    """Clear the approval: no beacon report counts as presence any more; GPS alone decides."""
    _change(subject_id, None)


@beacon_app.command("show")
def beacon_show(subject_id: int) -> None:
    """The approved home beacon, who approved it and when."""
    import psycopg  # noqa: PLC0415

    from tagwatch.store.subjects import home_beacon_approval  # noqa: PLC0415

    with psycopg.connect(settings().database_url) as conn:
        approval = home_beacon_approval(conn, subject_id)
    if approval is None:
        typer.echo(f"no subject {subject_id}", err=True)
        raise typer.Exit(1)
    _show(subject_id, approval)
