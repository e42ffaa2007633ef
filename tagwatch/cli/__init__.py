"""`tagwatch`: the one front door for every operation.

A module per command group (services, schema, processes, simulation, accounts, subjects,
audit, bench, chaos, report); this module builds the command tree from them in one place, so
`tagwatch --help` lists the commands in the order written here. Every command imports what it
runs inside its body: the CLI starts light, and `tagwatch --help` works whatever optional piece
is broken.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from tagwatch.cli import processes, schema, simulation
from tagwatch.cli.accounts import device_app, user_app
from tagwatch.cli.audit import audit_app
from tagwatch.cli.bench import bench_app
from tagwatch.cli.chaos import chaos_app
from tagwatch.cli.report import report_app
from tagwatch.cli.services import services_app
from tagwatch.cli.simulation import scenario_app
from tagwatch.cli.subjects import subject_app
from tagwatch.settings import load_env_file

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="tagwatch: electronic monitoring platform.")


@app.callback()
def main(
    env_file: Annotated[
        Path | None, typer.Option(help="KEY=VALUE file of TAGWATCH_* settings")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if env_file is not None:
        os.environ["TAGWATCH_ENV_FILE"] = str(env_file)
        load_env_file(str(env_file))


app.command()(schema.migrate)
app.command("check-config")(schema.check_config)
app.command()(processes.ingest)
app.command()(processes.api)
app.command()(processes.run)
app.command()(simulation.simulate)
app.command()(simulation.load)
app.command("score-offline")(simulation.score_offline_command)
app.command()(processes.dispatch)
app.command()(schema.openapi)

app.add_typer(services_app, name="services")
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")
app.add_typer(subject_app, name="subject")
app.add_typer(bench_app, name="bench")
app.add_typer(chaos_app, name="chaos")
app.add_typer(scenario_app, name="scenario")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
