"""Simulated traffic and the scenario library: `tagwatch simulate`, `load`, `score-offline` and
`tagwatch scenario list|run|score`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tagwatch.cli.common import DEFAULT_MANIFEST, settings

if TYPE_CHECKING:
    from tagwatch.simulators.scenario import Scenario


class Noise(StrEnum):
    """`--noise`: one noise model (simulators/noise_models.py) or every one of them."""

    GAUSSIAN = "gaussian"
    HEAVY = "heavy"
    BOTH = "both"


def noise_models(choice: Noise) -> list[str]:
    """The models a `--noise` choice names; `both` is every registered one, so a library that
    passes only under the model it was written with shows (issue 14)."""
    from tagwatch.simulators.noise_models import NOISE_MODELS  # noqa: PLC0415

    return list(NOISE_MODELS) if choice is Noise.BOTH else [choice.value]


def manifest_for(path: Path, model: str) -> Path:
    """Where the run under `model` is recorded: the Gaussian run where it always was, another
    model's beside it (`run.json` → `run-heavy.json`), so `--noise both` keeps both."""
    if model == Noise.GAUSSIAN:
        return path
    return path.with_name(f"{path.stem}-{model}{path.suffix}")


NOISE_HELP = "noise model of the devices' fixes: gaussian, heavy or both"

scenario_app = typer.Typer(no_args_is_help=True, help="The scenario library: list, run, score.")


def library(names: list[str] | None = None) -> list[Scenario]:
    """The scenario library (or the named scenarios of it), exit 1 when there is nothing to use.

    An installation without its library (a wheel built without the scenarios) must say so: an
    empty table, or a score of 0/0, reads like success. A name the library does not hold is an
    error too, not a smaller run than asked for.
    """
    from tagwatch.simulators.scenario import LIBRARY, load_library  # noqa: PLC0415

    scenarios = load_library()
    if not scenarios:
        typer.echo(f"no scenario library: no *.toml in {LIBRARY}", err=True)
        raise typer.Exit(1)
    if names:
        unknown = sorted(set(names) - {s.name for s in scenarios})
        if unknown:
            typer.echo(
                f"no scenario {', '.join(unknown)} in the library (see `tagwatch scenario list`)",
                err=True,
            )
            raise typer.Exit(2)
        return [s for s in scenarios if s.name in names]
    return scenarios


def simulate(
    devices: Annotated[int, typer.Option(min=1, help="how many tags")] = 10,
    interval: Annotated[float, typer.Option(min=0.01, help="seconds between fixes")] = 60.0,
    duration: Annotated[float | None, typer.Option(help="seconds; default until Ctrl-C")] = None,
    region: Annotated[str, typer.Option()] = "demo",
) -> None:
    """Register tags (with their own credentials) and publish fixes over real MQTT."""
    from tagwatch.simulators.publisher import run_simulation  # noqa: PLC0415

    stats = run_simulation(settings(), devices, interval, duration, region)
    typer.echo(f"published {stats.published} fixes from {stats.devices} devices")


def load(
    devices: Annotated[int, typer.Option(min=1, help="devices reporting")] = 1000,
    interval: Annotated[
        float, typer.Option(min=0.01, help="seconds between a device's fixes")
    ] = 60.0,
    duration: Annotated[float, typer.Option(min=1.0, help="seconds of steady load")] = 60.0,
    clients: Annotated[int, typer.Option(min=1, help="gateway connections publishing")] = 2,
    sample: Annotated[int, typer.Option(min=1, help="one fix in SAMPLE is timed")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="figures as JSON at the end")] = False,
) -> None:
    """N devices at a steady rate through a gateway account; achieved rate and latency."""
    from tagwatch.simulators.load import run_load  # noqa: PLC0415

    report = run_load(
        settings(), devices, interval, duration, clients=clients, sample=sample, echo=typer.echo
    )
    for line in report.lines():
        typer.echo(line)
    if as_json:
        typer.echo(json.dumps(report.figures()))
    if report.unseen:
        raise typer.Exit(1)


def score_offline_command(
    names: Annotated[list[str] | None, typer.Argument(help="scenarios (default: all)")] = None,
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP)] = Noise.BOTH,
) -> None:
    """Score the rule core on the scenario library without broker or database (seconds),
    under each noise model: one scorecard per model, then a summary line per model."""
    from tagwatch.simulators.offline_scoring import score_offline  # noqa: PLC0415
    from tagwatch.simulators.scoring import format_by_model  # noqa: PLC0415

    scenarios = library(names)
    results = {m: score_offline(scenarios, noise_model=m) for m in noise_models(noise)}
    typer.echo(format_by_model(results))
    if any(c.missed or c.false or c.slow for cards, _ in results.values() for c in cards):
        raise typer.Exit(1)


# ------------------------------------------------------------------ scenarios


@scenario_app.command("list")
def scenario_list() -> None:
    """The scenarios in the library, with what each one expects."""
    for s in library():
        expects = ", ".join(sorted({e.alert for e in s.expect})) or "no alert"
        typer.echo(f"{s.name:<22} {s.duration_s / 3600:>5.1f} h  expects: {expects}")


@scenario_app.command("run")
def scenario_run(
    names: Annotated[list[str] | None, typer.Argument(help="scenario names")] = None,
    all_scenarios: Annotated[bool, typer.Option("--all", help="every scenario")] = False,
    speedup: Annotated[
        float, typer.Option(min=1.0, help="scenario seconds per wall second")
    ] = 360.0,
    on_date: Annotated[
        str | None, typer.Option("--date", help="local start date (default: days ago)")
    ] = None,
    manifest: Annotated[Path, typer.Option(help="where the run is recorded")] = DEFAULT_MANIFEST,
    score: Annotated[bool, typer.Option("--score", help="score the run when it ends")] = False,
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP)] = Noise.GAUSSIAN,
) -> None:
    """Play scenarios against the running platform (ingest must be running), time compressed;
    `--noise both` plays them once per noise model, one after the other."""
    from datetime import date  # noqa: PLC0415

    from tagwatch.simulators.runner import run_scenarios  # noqa: PLC0415

    if all_scenarios:
        names = [s.name for s in library()]
    if not names:
        typer.echo("name scenarios or give --all (see `tagwatch scenario list`)", err=True)
        raise typer.Exit(2)
    try:
        day = date.fromisoformat(on_date) if on_date else None
    except ValueError:
        typer.echo(f"--date must be YYYY-MM-DD, not {on_date!r}", err=True)
        raise typer.Exit(2) from None
    finished = True
    for model in noise_models(noise):
        typer.echo(f"noise model: {model}")
        result = run_scenarios(
            settings(),
            names,
            speedup=speedup,
            on_date=day,
            manifest_path=manifest_for(manifest, model),
            echo=typer.echo,
            noise_model=model,
        )
        finished = finished and result.finished
    if score:
        _score(manifest, noise)
    if not finished:
        raise typer.Exit(1)


def _score(manifest: Path, noise: Noise) -> None:
    from tagwatch.simulators.runner import Manifest, score_manifest  # noqa: PLC0415
    from tagwatch.simulators.scoring import format_by_model  # noqa: PLC0415

    paths = {m: manifest_for(manifest, m) for m in noise_models(noise)}
    for path in paths.values():
        if not path.exists():
            typer.echo(f"no run recorded at {path}; run `tagwatch scenario run` first", err=True)
            raise typer.Exit(2)
    results = {m: score_manifest(settings(), Manifest.load(p)) for m, p in paths.items()}
    typer.echo(format_by_model(results))
    if any(not c.passed for cards, _ in results.values() for c in cards):
        raise typer.Exit(1)


@scenario_app.command("score")
def scenario_score(
    manifest: Annotated[Path, typer.Option(help="the run to score")] = DEFAULT_MANIFEST,
    noise: Annotated[Noise, typer.Option(help=NOISE_HELP)] = Noise.GAUSSIAN,
) -> None:
    """Compare the alerts the platform raised in a run with the expected ones, beside naive;
    `--noise` picks the run(s) of `scenario run --noise` to score."""
    _score(manifest, noise)
