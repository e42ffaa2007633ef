"""What every command group shares: the settings, and the refusal of a long-running process to
start on settings `check-config` finds fault with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tagwatch.settings import Settings, get_settings

DirOption = Annotated[Path, typer.Option("--dir", help="where the private services live")]
DEFAULT_DIR = Path(".tagwatch")
DEFAULT_MANIFEST = DEFAULT_DIR / "scenario-run.json"


def settings() -> Settings:
    return get_settings()


def sound_settings(command: str) -> Settings:
    """The settings of a long-running process, which refuses to start on a configuration that
    `check-config` finds fault with (a default secret, a plaintext broker, a missing key), unless
    TAGWATCH_ENVIRONMENT=development was set explicitly (the default is production)."""
    s = settings()
    problems = s.problems()
    if not problems:
        return s
    for problem in problems:
        typer.echo(f"- {problem}", err=True)
    if s.environment == "development":
        typer.echo(f"{command}: starting anyway (TAGWATCH_ENVIRONMENT=development)", err=True)
        return s
    typer.echo(
        f"{command}: refusing to start in {s.environment} with the problems above"
        " (`tagwatch check-config` lists them; TAGWATCH_ENVIRONMENT=development overrides)",
        err=True,
    )
    raise typer.Exit(1)
