"""`tagwatch bench`: the benchmarks that print figures (tagwatch/bench/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tagwatch.ingest.collector import DEFAULT_YOUNG_THRESHOLD

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")


@bench_app.command("ingest")
def bench_ingest(
    fixes: Annotated[int, typer.Option(help="fixes per measured run")] = 100_000,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
    workers: Annotated[
        str,
        typer.Option(
            help="ingest worker processes draining the engine on/off runs, comma-separated"
        ),
    ] = "1,2",
    pin: Annotated[
        bool,
        typer.Option(
            "--pin/--no-pin", help="keep worker k's threads on CPU k (TAGWATCH_INGEST_CPU)"
        ),
    ] = False,
) -> None:
    """Fixes/s through broker → decode → commit → ack, beside a bare subscriber's ceiling; the
    alert engine on and off with 1 and 2 ingest workers on one shared subscription."""
    from tagwatch.bench.ingest import run_benchmark  # noqa: PLC0415

    try:
        counts = [int(part) for part in workers.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise typer.BadParameter("a comma-separated list of worker counts, e.g. 1,2")
    run_benchmark(fixes, directory, echo=typer.echo, workers=counts, pin=pin)


@bench_app.command("handoff")
def bench_handoff(
    messages: Annotated[int, typer.Option(min=1000, help="messages a run")] = 200_000,
    rounds: Annotated[int, typer.Option(min=1, help="alternations of the two hand-offs")] = 3,
) -> None:
    """CPU a message of an ingest worker's network thread → decoder hand-off: queue.Queue (the
    baseline) against ingest.inbox.Inbox, alternated, on one CPU."""
    from tagwatch.bench.handoff import run as run_handoff  # noqa: PLC0415

    run_handoff(messages, rounds, echo=typer.echo)


@bench_app.command("geofence")
def bench_geofence(
    subjects: Annotated[int, typer.Option(help="subjects in the national set")] = 100_000,
    global_zones: Annotated[int, typer.Option(help="global exclusion zones")] = 1_000,
    fixes: Annotated[int, typer.Option(help="fixes to classify")] = 1_000_000,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Fixes/s through the vectorized classifier on one core, beside a naive per-fix loop."""
    from tagwatch.bench.geofence import run as run_geofence  # noqa: PLC0415

    run_geofence(subjects, global_zones, fixes, seed, echo=typer.echo)


@bench_app.command("alerts")
def bench_alerts(
    rate: Annotated[float, typer.Option(min=1.0, help="background fixes per second")] = 5000.0,
    probes: Annotated[int, typer.Option(min=1, help="probe episodes under load")] = 200,
    duration: Annotated[float, typer.Option(min=1.0, help="seconds the probes spread over")] = 60.0,
    interval: Annotated[
        float, typer.Option(min=0.1, help="each background device's fix interval")
    ] = 60.0,
    workers: Annotated[
        int, typer.Option(min=1, help="ingest worker processes on one shared subscription")
    ] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="small and short (smoke test)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="figures as JSON at the end")] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
    pin: Annotated[
        bool,
        typer.Option(
            "--pin/--no-pin", help="keep worker k's threads on CPU k (TAGWATCH_INGEST_CPU)"
        ),
    ] = False,
) -> None:
    """Publish → alert committed and → webhook delivered percentiles, idle and under load."""
    from tagwatch.bench.alerts import run_benchmark  # noqa: PLC0415

    figures = run_benchmark(
        rate,
        probes,
        duration,
        interval=interval,
        quick=quick,
        workers=workers,
        directory=directory,
        echo=typer.echo,
        pin=pin,
    )
    if as_json:
        typer.echo(json.dumps(figures))


@bench_app.command("false-alerts")
def bench_false_alerts(
    subjects: Annotated[
        int | None, typer.Option(min=1, help="subjects (default 1000; 20 with --pipeline)")
    ] = None,
    days: Annotated[
        float | None, typer.Option(min=0.1, help="days each (default 7; 1 with --pipeline)")
    ] = None,
    seed: Annotated[int, typer.Option(help="the population's seed")] = 1,
    noise: Annotated[str, typer.Option(help="noise model: gaussian, heavy or both")] = "gaussian",
    pipeline: Annotated[
        bool,
        typer.Option("--pipeline", help="through the real broker and database (private services)"),
    ] = False,
    speedup: Annotated[
        float, typer.Option(min=1.0, help="--pipeline: scenario seconds per wall second")
    ] = 720.0,
    progress: Annotated[int, typer.Option(min=1, help="a progress line every N subjects")] = 100,
    cohort: Annotated[
        int,
        typer.Option(
            min=1, help="subjects replayed together: bigger batches are faster (170: ~1.7 GB)"
        ),
    ] = 170,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="--pipeline: private services dir (kept)")
    ] = None,
) -> None:
    """False alerts per subject-day on a compliant population, beside the naive tracker."""
    from tagwatch.bench.false_alerts import (  # noqa: PLC0415
        NOISE_MODELS,
        run_benchmark,
        run_pipeline_benchmark,
    )

    if noise not in (*NOISE_MODELS, "both"):
        typer.echo(f"--noise must be one of {', '.join(NOISE_MODELS)} or both", err=True)
        raise typer.Exit(2)
    try:
        if pipeline:
            run_pipeline_benchmark(
                subjects or 20,
                days or 1.0,
                seed,
                noise,
                speedup=speedup,
                directory=directory,
                echo=typer.echo,
            )
        else:
            run_benchmark(
                subjects or 1000,
                days or 7.0,
                seed,
                noise,
                cohort_size=cohort,
                progress_every=progress,
                echo=typer.echo,
            )
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@bench_app.command("store")
def bench_store(
    rows: Annotated[int, typer.Option(min=1000, help="fixes to store")] = 100_000_000,
    days: Annotated[
        float, typer.Option(min=0.1, help="the period they span (sets the subjects)")
    ] = 7.0,
    subjects: Annotated[
        int | None, typer.Option(min=2, help="subjects (instead of --days: sets the period)")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="random subjects and places timed")] = 50,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="a server to use (a fresh database tagwatch_bench_store is made on it);"
            " default: a private PostgreSQL"
        ),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="keep the database afterwards")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="print the query plans")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="figures as JSON at the end")] = False,
) -> None:
    """Track, proximity and compliance-report times and bytes per fix on N stored fixes."""
    from tagwatch.bench.store import run as run_store  # noqa: PLC0415

    figures = run_store(
        rows,
        days=days,
        subjects=subjects,
        samples=samples,
        database_url=database_url,
        directory=directory,
        keep=keep,
        explain=explain,
        echo=typer.echo,
    )
    if as_json:
        typer.echo(json.dumps(figures, default=str))


@bench_app.command("cold-start")
def bench_cold_start(
    subjects: Annotated[int, typer.Option(help="subjects in the national catalogue")] = 100_000,
    global_zones: Annotated[int, typer.Option(help="global exclusion zones")] = 1_000,
    seed: Annotated[int, typer.Option()] = 1,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
) -> None:
    """Seconds from starting `tagwatch ingest` to its first evaluated batch at national size:
    building the zone index from the tables, beside loading the catalogue snapshot."""
    from tagwatch.bench.cold_start import run as run_cold_start  # noqa: PLC0415

    run_cold_start(subjects, global_zones, seed, directory, echo=typer.echo)


@bench_app.command("engine-states")
def bench_engine_states(
    subjects: Annotated[int, typer.Option(min=1, help="monitored subjects")] = 20_000,
    batch: Annotated[int, typer.Option(min=1, help="fixes (subjects) per batch")] = 2_000,
    rounds: Annotated[int, typer.Option(min=2, help="fixes per subject per run")] = 5,
    pairs: Annotated[int, typer.Option(min=1, help="off/on run pairs")] = 3,
    gc_threshold: Annotated[
        int,
        typer.Option(
            min=0, help="garbage collector's young threshold, as ingest sets it (0: Python's)"
        ),
    ] = DEFAULT_YOUNG_THRESHOLD,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
) -> None:
    """The alert engine's batch path alone, without and with the decoded rule states it keeps
    between batches, in alternating runs."""
    from tagwatch.bench.engine_states import run as run_engine_states  # noqa: PLC0415

    run_engine_states(
        subjects, batch, rounds, pairs, directory, echo=typer.echo, gc_threshold=gc_threshold
    )
