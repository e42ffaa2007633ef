"""`tagwatch`: the one front door for every operation."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tagwatch.settings import Settings, get_settings, load_env_file

if TYPE_CHECKING:
    from tagwatch.ingest.device_broker import DeviceBroker

app = typer.Typer(no_args_is_help=True, help="tagwatch: electronic monitoring platform.")
services_app = typer.Typer(no_args_is_help=True, help="Private PostgreSQL + Mosquitto.")
user_app = typer.Typer(no_args_is_help=True, help="Operator accounts.")
device_app = typer.Typer(no_args_is_help=True, help="Devices and their broker credentials.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")
scenario_app = typer.Typer(no_args_is_help=True, help="The scenario library: list, run, score.")
app.add_typer(services_app, name="services")
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")
app.add_typer(bench_app, name="bench")
app.add_typer(scenario_app, name="scenario")

DirOption = Annotated[Path, typer.Option("--dir", help="where the private services live")]
DEFAULT_DIR = Path(".tagwatch")
DEFAULT_MANIFEST = DEFAULT_DIR / "scenario-run.json"
EXAMPLE_FIX = '''-m "{\\"ts\\": $(date +%s), \\"lat\\": -33.92, \\"lon\\": 18.42, \\"acc\\": 8}"'''
EXAMPLE_OWNTRACKS = (
    """-m "{\\"_type\\": \\"location\\", \\"tst\\": $(date +%s), \\"lat\\": -33.92, """
    '''\\"lon\\": 18.42, \\"acc\\": 8, \\"tid\\": \\"p1\\"}"'''
)


def try_publish_line(
    broker: DeviceBroker, device_id: str, password: str, owntracks_topic: str | None
) -> str:
    """A `mosquitto_pub` line that publishes one fix as the device would, over TLS."""
    tls = f"--cafile {broker.ca_file} " if broker.tls and broker.ca_file else ""
    topic = owntracks_topic or f"em/v1/{device_id}/fix"
    payload = EXAMPLE_OWNTRACKS if owntracks_topic else EXAMPLE_FIX
    return (
        f"mosquitto_pub -h {broker.host} -p {broker.port} {tls}-u {device_id} "
        f"-i {device_id} -P '{password}' -q 1 -t {topic} {payload}"
    )


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


# ------------------------------------------------------------------ services


@services_app.command("up")
def services_up(
    directory: DirOption = DEFAULT_DIR,
    plain_devices: Annotated[
        bool, typer.Option(help="also a plain-TCP device listener on loopback (development)")
    ] = False,
) -> None:
    """Start (or reuse) private PostgreSQL and Mosquitto for development; write DIR/env."""
    from tagwatch import services  # noqa: PLC0415 - keep CLI start-up light

    state = services.up(directory, plain_devices=plain_devices)
    typer.echo(f"PostgreSQL on 127.0.0.1:{state.pg_port} (timescaledb: {state.timescaledb})")
    typer.echo(
        f"Mosquitto  on 127.0.0.1:{state.mqtt_port} for devices (TLS, per-device accounts"
        f" pinned to their client id), 127.0.0.1:{state.mqtt_service_port} for services"
        " (client certificates)"
    )
    if state.mqtt_plain_port:
        typer.echo(f"           127.0.0.1:{state.mqtt_plain_port} for devices without TLS (dev)")
    typer.echo(f"CA to pin: {state.env()['TAGWATCH_MQTT_DEVICE_URL'].split('?ca=')[1]}")
    typer.echo(f"settings in {directory.resolve() / 'env'}")


@services_app.command("down")
def services_down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop the private services (their data stays in DIR)."""
    from tagwatch import services  # noqa: PLC0415

    services.down(directory)
    typer.echo("stopped")


@services_app.command("status")
def services_status(directory: DirOption = DEFAULT_DIR) -> None:
    from tagwatch import services  # noqa: PLC0415

    typer.echo(json.dumps(services.status(directory), indent=2))


# ------------------------------------------------------------------ schema and config


@app.command()
def migrate() -> None:
    """Apply the numbered SQL migrations that are missing."""
    from tagwatch.store.migrate import migrate as run_migrations  # noqa: PLC0415

    s = settings()
    done = run_migrations(s.database_url, s.compress_after, s.retain_fixes_for)
    typer.echo(f"applied: {', '.join(done)}" if done else "schema up to date")


@app.command("check-config")
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


# ------------------------------------------------------------------ processes


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
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


# ------------------------------------------------------------------ accounts


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, supervisor, operator or tracer")] = "operator",
    region: Annotated[list[str] | None, typer.Option(help="repeat; '*' for every region")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="TAGWATCH_NEW_PASSWORD", help="else prompted")
    ] = None,
) -> None:
    """Create or update a user (argon2 hash stored)."""
    import psycopg  # noqa: PLC0415

    from tagwatch.api.security import ROLES, hash_password  # noqa: PLC0415

    if role not in ROLES:
        typer.echo(f"role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    secret = password or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(secret) < 8:
        typer.echo("password must have at least 8 characters", err=True)
        raise typer.Exit(2)
    with psycopg.connect(settings().database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, role, regions) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, "
            "role = excluded.role, regions = excluded.regions, disabled = false, "
            "token_generation = users.token_generation + 1",  # earlier tokens stop working
            (username, hash_password(secret), role, region or ["*"]),
        )
        conn.execute("DELETE FROM login_throttle WHERE username = %s", (username,))
    typer.echo(f"user {username} ({role}, regions {', '.join(region or ['*'])}) saved")


@device_app.command("add")
def device_add(
    device_id: str,
    kind: Annotated[str, typer.Option(help="tag, phone or victim_phone")] = "tag",
    owntracks_topic: Annotated[str | None, typer.Option(help="phones only")] = None,
    subject: Annotated[
        str | None, typer.Option(help="also create a subject of this name holding the device")
    ] = None,
    region: Annotated[str, typer.Option(help="region of the new subject")] = "demo",
) -> None:
    """Register a device and print its MQTT credentials (the password is shown once)."""
    import psycopg  # noqa: PLC0415

    from tagwatch.ingest.broker_accounts import BrokerAdmin, reserved_device_id  # noqa: PLC0415
    from tagwatch.ingest.device_broker import device_broker  # noqa: PLC0415
    from tagwatch.ingest.provisioning import provision_device  # noqa: PLC0415

    reserved = reserved_device_id(device_id)
    if reserved:
        typer.echo(f"refused: {reserved}", err=True)
        raise typer.Exit(2)
    s = settings()
    subject_id = None
    with psycopg.connect(s.database_url) as conn:
        password = provision_device(
            conn, BrokerAdmin.from_url(s.mqtt_admin_url), device_id, kind, owntracks_topic
        )
        if subject:
            conn.execute(
                "INSERT INTO regions (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (region, region),
            )
            row = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (subject, region),
            ).fetchone()
            subject_id = row[0] if row else None
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during) "
                "VALUES (%s, %s, 'offender', tstzrange(now() - interval '1 day', NULL))",
                (device_id, subject_id),
            )
    broker = device_broker(s)
    typer.echo(
        json.dumps(
            {
                "device_id": device_id,
                "username": device_id,
                "client_id": device_id,
                "password": password,
                "broker": broker.url,
                "ca_file": broker.ca_file,
                "subject_id": subject_id,
                "try": try_publish_line(broker, device_id, password, owntracks_topic),
            },
            indent=2,
        )
    )
    if broker.ca_pem:
        typer.echo("# the CA the device must pin (TLS):", err=True)
        typer.echo(broker.ca_pem.strip(), err=True)
    if owntracks_topic:
        typer.echo(
            f"# OwnTracks app (docs/phones.md): mode MQTT, host {broker.host}, port"
            f" {broker.port}, TLS on with the CA above, user name {device_id}, the password"
            f" above, client ID {device_id} (the broker refuses any other), base topic"
            f" {owntracks_topic}",
            err=True,
        )


# ------------------------------------------------------------------ audit log

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log of location reads.")
app.add_typer(audit_app, name="audit")


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


# ------------------------------------------------------------------ benchmarks


@bench_app.command("ingest")
def bench_ingest(
    fixes: Annotated[int, typer.Option(help="fixes per measured run")] = 100_000,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
) -> None:
    """Fixes/s through broker → decode → commit → ack, beside a bare subscriber's ceiling."""
    from tagwatch.bench_ingest import run_benchmark  # noqa: PLC0415

    run_benchmark(fixes, directory, echo=typer.echo)


@bench_app.command("geofence")
def bench_geofence(
    subjects: Annotated[int, typer.Option(help="subjects in the national set")] = 100_000,
    global_zones: Annotated[int, typer.Option(help="global exclusion zones")] = 1_000,
    fixes: Annotated[int, typer.Option(help="fixes to classify")] = 1_000_000,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Fixes/s through the vectorized classifier on one core, beside a naive per-fix loop."""
    from tagwatch.bench_geofence import run as run_geofence  # noqa: PLC0415

    run_geofence(subjects, global_zones, fixes, seed, echo=typer.echo)


@bench_app.command("alerts")
def bench_alerts(
    rate: Annotated[float, typer.Option(min=1.0, help="background fixes per second")] = 5000.0,
    probes: Annotated[int, typer.Option(min=1, help="probe episodes under load")] = 200,
    duration: Annotated[float, typer.Option(min=1.0, help="seconds the probes spread over")] = 60.0,
    interval: Annotated[
        float, typer.Option(min=0.1, help="each background device's fix interval")
    ] = 60.0,
    quick: Annotated[bool, typer.Option("--quick", help="small and short (smoke test)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="figures as JSON at the end")] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="private services dir (default: a temp dir)")
    ] = None,
) -> None:
    """Publish → alert committed and → webhook delivered percentiles, idle and under load."""
    from tagwatch.bench_alerts import run_benchmark  # noqa: PLC0415

    figures = run_benchmark(
        rate,
        probes,
        duration,
        interval=interval,
        quick=quick,
        directory=directory,
        echo=typer.echo,
    )
    if as_json:
        typer.echo(json.dumps(figures))


@app.command("score-offline")
def score_offline_command(
    names: Annotated[list[str] | None, typer.Argument(help="scenarios (default: all)")] = None,
) -> None:
    """Score the rule core on the scenario library without broker or database (seconds)."""
    from tagwatch.simulators.offline_scoring import score_offline  # noqa: PLC0415
    from tagwatch.simulators.scenario import load_library  # noqa: PLC0415
    from tagwatch.simulators.scoring import format_scorecards  # noqa: PLC0415

    library = [s for s in load_library() if not names or s.name in names]
    cards, naive = score_offline(library)
    typer.echo(format_scorecards(cards, naive))
    if any(c.missed or c.false or c.slow for c in cards):
        raise typer.Exit(1)


# ------------------------------------------------------------------ scenarios


@scenario_app.command("list")
def scenario_list() -> None:
    """The scenarios in the library, with what each one expects."""
    from tagwatch.simulators.scenario import load_library  # noqa: PLC0415

    for s in load_library():
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
) -> None:
    """Play scenarios against the running platform (ingest must be running), time compressed."""
    from datetime import date  # noqa: PLC0415

    from tagwatch.simulators.runner import run_scenarios  # noqa: PLC0415
    from tagwatch.simulators.scenario import load_library  # noqa: PLC0415

    if all_scenarios:
        names = [s.name for s in load_library()]
    if not names:
        typer.echo("name scenarios or give --all (see `tagwatch scenario list`)", err=True)
        raise typer.Exit(2)
    try:
        day = date.fromisoformat(on_date) if on_date else None
    except ValueError:
        typer.echo(f"--date must be YYYY-MM-DD, not {on_date!r}", err=True)
        raise typer.Exit(2) from None
    result = run_scenarios(
        settings(), names, speedup=speedup, on_date=day, manifest_path=manifest, echo=typer.echo
    )
    if score:
        _score(manifest)
    if not result.finished:
        raise typer.Exit(1)


def _score(manifest: Path) -> None:
    from tagwatch.simulators.runner import Manifest, score_manifest  # noqa: PLC0415
    from tagwatch.simulators.scoring import format_scorecards  # noqa: PLC0415

    if not manifest.exists():
        typer.echo(f"no run recorded at {manifest}; run `tagwatch scenario run` first", err=True)
        raise typer.Exit(2)
    cards, naive = score_manifest(settings(), Manifest.load(manifest))
    typer.echo(format_scorecards(cards, naive))
    if any(not c.passed for c in cards):
        raise typer.Exit(1)


@scenario_app.command("score")
def scenario_score(
    manifest: Annotated[Path, typer.Option(help="the run to score")] = DEFAULT_MANIFEST,
) -> None:
    """Compare the alerts the platform raised in a run with the expected ones, beside naive."""
    _score(manifest)


@app.command()
def dispatch() -> None:
    """Deliver alert notifications (signed webhooks, MQTT em/v1/alerts/{region}) until stopped."""
    from tagwatch.alerts.dispatcher import main as dispatch_main  # noqa: PLC0415

    stats = dispatch_main(sound_settings("dispatch"))
    typer.echo(
        f"dispatch stopped: {stats.delivered} delivered, {stats.retried} retries scheduled, "
        f"{stats.failed} failed"
    )


@app.command()
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
