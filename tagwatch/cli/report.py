"""`tagwatch report`: the absconder reporting template from the command line, and a simulated
month of absconder cases to show it on (`simulate-absconders`).

`absconders-monthly` computes what GET /api/v1/reports/absconders/monthly answers, over every
region (or the ones named), and is audited as a read by the CLI's user; it can also print the
template as a Markdown table and draw a page as PNG (the README's picture)."""

from __future__ import annotations

import asyncio
import getpass
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tagwatch.cli.common import settings

report_app = typer.Typer(no_args_is_help=True, help="Reports: the absconder template.")
MONTH_HELP = "YYYY-MM (months in TAGWATCH_ABSCONDER_REPORT_TIMEZONE, UTC unless set)"


class Output(StrEnum):
    JSON = "json"
    CSV = "csv"
    PDF = "pdf"
    PNG = "png"
    MARKDOWN = "markdown"


def _check_month(value: str) -> str:
    import re  # noqa: PLC0415

    if not re.fullmatch(r"[12][0-9]{3}-(0[1-9]|1[0-2])", value):
        raise typer.BadParameter("YYYY-MM")
    return value


def markdown(template: dict[str, Any]) -> str:
    """The template as a Markdown table: a row per figure, a column per region and National."""
    from tagwatch.alerts.absconder_template import ROWS, value  # noqa: PLC0415
    from tagwatch.api.absconder_pdf import shown  # noqa: PLC0415

    columns = [*template["regions"], template["national"]]
    head = ["", *(str(c["name"] or c["region"]) for c in columns)]
    lines = [
        "| " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for key, label in ROWS:
        text = label.strip() if not label.startswith("  ") else f"&nbsp;&nbsp;{label.strip()}"
        lines.append("| " + " | ".join([text, *(shown(value(c, key)) for c in columns)]) + " |")
    return "\n".join(lines) + "\n"


async def _template(month: str, regions: list[str] | None) -> dict[str, Any] | None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from psycopg import AsyncConnection  # noqa: PLC0415

    from tagwatch.alerts.absconder_template import Period  # noqa: PLC0415
    from tagwatch.store import absconder_reports  # noqa: PLC0415
    from tagwatch.store.audit import append  # noqa: PLC0415

    config = settings()
    zone = config.absconder_report_timezone
    period = Period.month(month, zone, datetime.now(UTC))
    scope = "every region" if not regions else "regions named"
    async with await AsyncConnection.connect(config.database_url) as conn:
        report = await absconder_reports.monthly_template(conn, period, regions, None, scope)
        if report is None or (regions and not report["regions"]):
            return None
        detail = {
            "month": period.label,
            "timezone": zone,
            "regions": report["national"]["regions_included"],
            "format": "cli",
        }
        actor = f"cli:{getpass.getuser()}"
        await append(conn, actor, "admin", "report_absconders_monthly", None, detail)
    return report


@report_app.command("absconders-monthly")
def absconders_monthly(
    month: Annotated[str, typer.Option(help=MONTH_HELP, callback=_check_month)],
    region: Annotated[
        list[str] | None, typer.Option(help="a region to report on (repeat); default: all")
    ] = None,
    output_format: Annotated[Output, typer.Option("--format")] = Output.JSON,
    output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
    page: Annotated[
        str | None, typer.Option(help="--format png: this region's page (default: national)")
    ] = None,
) -> None:
    """The absconder reporting template of a month: per region and nationally."""
    report = asyncio.run(_template(month, region or None))
    if report is None:
        typer.echo(f"no such region: {', '.join(region or [])}", err=True)
        raise typer.Exit(1)
    data: bytes
    if output_format is Output.JSON:
        data = (json.dumps(report, default=str, indent=2) + "\n").encode()
    elif output_format is Output.MARKDOWN:
        data = markdown(report).encode()
    elif output_format is Output.CSV:
        from tagwatch.api.routes.reports import template_csv  # noqa: PLC0415

        data = template_csv(report).encode()
    else:
        from tagwatch.api.absconder_pdf import render_pdf, render_png  # noqa: PLC0415

        data = render_pdf(report) if output_format is Output.PDF else render_png(report, page)
    if output is None:
        if output_format in (Output.PDF, Output.PNG):
            typer.echo("a PDF or PNG needs --output FILE", err=True)
            raise typer.Exit(2)
        typer.echo(data.decode(), nl=False)
        return
    output.write_bytes(data)
    typer.echo(f"wrote {output}", err=True)


@report_app.command("simulate-absconders")
def simulate_absconders(
    month: Annotated[str, typer.Option(help="YYYY-MM", callback=_check_month)],
    seed: Annotated[int, typer.Option(help="the same seed writes the same month")] = 16,
    prefix: Annotated[str, typer.Option(help="region ids are PREFIX-north etc.")] = "sim",
) -> None:
    """Write a simulated month of absconder cases (simulators/absconder_month.py): three
    regions, their monitored subjects (each holding a tag) and the cases of the month and of
    the six months before it. For demos and the README: never on a production database."""
    import psycopg  # noqa: PLC0415

    from tagwatch.simulators.absconder_month import simulate_month  # noqa: PLC0415
    from tagwatch.store.absconder_reports import write_demo_month  # noqa: PLC0415

    config = settings()
    if config.environment == "production":
        typer.echo("simulate-absconders writes made-up cases: not in production", err=True)
        raise typer.Exit(1)
    sim = simulate_month(month, seed, prefix)
    with psycopg.connect(config.database_url) as conn:
        written = write_demo_month(
            conn,
            [(r.region_id, r.name) for r in sim.regions],
            [
                (s.name, s.case_ref, s.region_id, s.device_id, s.held_from, s.held_until)
                for s in sim.subjects
            ],
            [
                (c.subject, c.cause, c.opened_at, c.traced_at, c.outcome, c.closed_at)
                for c in sim.cases
            ],
        )
    if not written:
        typer.echo(f"already written (prefix {prefix!r}): nothing changed")
        return
    regions = ", ".join(r.region_id for r in sim.regions)
    typer.echo(f"wrote {len(sim.subjects)} subjects and {len(sim.cases)} cases in {regions}")
