"""`tagwatch migrate`, `check-config` and `openapi`: the schema, the settings and the API
document, checked or brought up to date."""

from __future__ import annotations

from typing import Annotated

import typer

from tagwatch.cli.common import settings


def migrate() -> None:
    """Apply the numbered SQL migrations that are missing."""
    from tagwatch.store.migrate import migrate as run_migrations  # noqa: PLC0415

    s = settings()
    done = run_migrations(s.database_url, s.compress_after, s.retain_fixes_for)
    typer.echo(f"applied: {', '.join(done)}" if done else "schema up to date")


def check_config() -> None:
    """Print what is wrong with the current settings; exit 1 if anything is."""
    try:
        s = settings()
    except Exception as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(1) from exc
    problems = s.problems()
    for problem in problems:
        typer.echo(f"- {problem}")
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok ({s.environment})")


def openapi(
    write: Annotated[bool, typer.Option("--write", help="rewrite docs/openapi.json")] = False,
) -> None:
    """Check (or with --write, rewrite) the committed OpenAPI document against the app."""
    from tagwatch.openapi_doc import drift  # noqa: PLC0415
    from tagwatch.openapi_doc import write as write_doc  # noqa: PLC0415

    if write:
        typer.echo(f"wrote {write_doc()}")
        return
    problem = drift()
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo("docs/openapi.json matches the app")
