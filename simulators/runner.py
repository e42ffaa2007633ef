"""Play scenarios against a running platform: provision them, compress their time, publish.

A scenario's devices send their own fix times, so a day can be played in a minute: the runner
publishes each message at `wall_origin + (at - origin) / speedup` and tells the rules' clock
(`rule_clock`) the same mapping, so silences, curfew starts and lateness are judged in scenario
time. The clock is one per platform: play scenarios on a platform of their own (the demo's or
the test suite's), not beside live caseloads.

Scenarios are moved to a date in the past (`on_date`, same local start time) because ingest
refuses fixes from the future. Every device connects with its own broker account, sets its will,
and drops without a DISCONNECT where the scenario says the network goes, so the broker itself
publishes the `offline` will, exactly as in the field. What was played is written to a manifest
that `tagwatch scenario score` reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from tagwatch.ingest.device_accounts import DeviceAccounts, device_accounts
from tagwatch.ingest.provisioning import provision_device
from tagwatch.mqtt_client import new_client
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.simulators.noise_models import DEFAULT_NOISE_MODEL
from tagwatch.simulators.scenario import (
    ScenarioRun,
    build_timeline,
    find_scenario,
    load_scenario,
)
from tagwatch.simulators.scoring import RaisedAlert, ScoreCard, naive_alerts, score_run
from tagwatch.simulators.wire import LinkAction, LinkChange, Publication, read_trace
from tagwatch.store import rule_clock
from tagwatch.store.alerts import raised_for
from tagwatch.store.devices import add_assignment, end_assignments
from tagwatch.store.engine_repository import forget_rule_state
from tagwatch.store.fixes import count_stored
from tagwatch.store.subjects import (
    add_subject,
    approve_home_beacon,
    ensure_region,
    move_subject,
)
from tagwatch.store.zones import ZoneDraft, create_zone

log = logging.getLogger(__name__)

DEFAULT_SPEEDUP = 360.0
LEAD_S = 2.0  # wall seconds between setting the clock and the first publication
TAIL_S = 60.0  # scenario seconds played after the last scenario ends
# The player tells the rules' clock how far it has published before every wait, and while it
# publishes without waiting (steps due now or overdue) at most this often (wall seconds).
MARK_EVERY_S = 0.01


@dataclass
class Manifest:
    """What a run provisioned and when, so that scoring can rebuild the exact same timelines."""

    run_id: str
    on_date: str
    speedup: float
    origin: float  # scenario epoch seconds at wall_origin
    wall_origin: float
    end: float  # scenario epoch seconds when the last scenario ended
    scenarios: list[str]
    subjects: dict[str, dict[str, int]] = field(default_factory=dict)  # scenario -> key -> id
    devices: dict[str, list[str]] = field(default_factory=dict)
    published: int = 0
    stored_fixes: int = 0
    expected_fixes: int = 0
    finished: bool = False
    noise_model: str = DEFAULT_NOISE_MODEL  # scoring rebuilds the timelines with the same model

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    scenario_time: float
    behind_s: float


def default_date(durations_s: Iterable[float], today: date | None = None) -> date:
    """The latest local date on which every scenario, started that day, is over by now."""
    longest = max([0.0, *durations_s])
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=math.ceil(longest / 86_400) + 1)


def run_ids(run_id: str, count: int) -> list[str]:
    """One fresh id per scenario of a run (ids are at most 8 characters)."""
    return [f"{run_id}{i:02d}"[:8] for i in range(count)]


# -- provisioning -------------------------------------------------------------------------


def provision(
    conn: psycopg.Connection, admin: DeviceAccounts, runs: Sequence[ScenarioRun]
) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Regions, subjects, devices (each with its own broker account), assignments and zones.

    A scenario's global zones are scoped to a group that only its own subjects carry, so that
    scenarios played together cannot see each other's zones."""
    subject_ids: dict[str, dict[str, int]] = {}
    passwords: dict[str, str] = {}
    for run in runs:
        plan = run.plan
        group = f"scenario-{run.run_id}"
        for region in plan.regions:
            ensure_region(conn, region.id, region.name)
        ids: dict[str, int] = {}
        for s in plan.subjects:
            ids[s.key] = add_subject(
                conn,
                name=s.display_name,
                case_ref=s.case_ref,
                region_id=s.region_id,
                timezone=s.timezone,
                groups=[group],
            )
            if s.home_beacon is not None:  # what the supervisor approved (migration 0019)
                approve_home_beacon(conn, ids[s.key], s.home_beacon, "scenario-runner")
        conn.commit()
        for d in plan.devices:
            passwords[d.device_id] = provision_device(
                conn, admin, d.device_id, d.kind, d.owntracks_topic, d.expected_interval_s
            )
        with conn.transaction():
            provision_holdings(conn, run, ids)
        subject_ids[run.scenario] = ids
    return subject_ids, passwords


def provision_holdings(conn: psycopg.Connection, run: ScenarioRun, ids: dict[str, int]) -> None:
    """A scenario's assignments and zones, once its subjects (``ids``: key -> id) and devices
    exist. Zones pass the API's checks (store.zones.create_zone): a scenario cannot play a zone
    the platform would refuse to draw."""
    group = f"scenario-{run.run_id}"
    for a in run.plan.assignments:
        add_assignment(conn, a.device_id, ids[a.subject_key], a.role, a.start, a.end)
    for z in run.plan.zones:
        create_zone(
            conn,
            ZoneDraft(
                name=z.name,
                kind=z.kind,
                geometry=z.geometry,
                radius_m=z.radius_m,
                buffer_m=z.buffer_m or None,
                subject_id=ids[z.subject_key] if z.subject_key else None,
                group_name=None if z.subject_key else group,
                region_id=z.region_id,
                victim_subject_id=ids[z.victim_subject_key] if z.victim_subject_key else None,
                schedule=None if z.schedule is None else z.schedule.to_json(),
            ),
        )


def release(conn: psycopg.Connection, subject_ids: Sequence[int], at: float) -> None:
    """A scenario is over: its subjects stop being monitored at `at` (scenario time), so that
    nothing raises 'no communication' for devices that were only ever simulated."""
    with conn.transaction():
        end_assignments(conn, subject_ids, at)
        forget_rule_state(conn, subject_ids)


def finish(conn: psycopg.Connection, manifest: Manifest) -> None:
    """Release every subject of the run and give the rules back the wall clock."""
    release(conn, [sid for per in manifest.subjects.values() for sid in per.values()], manifest.end)
    rule_clock.clear(conn)


# -- playing -------------------------------------------------------------------------------


class DeviceLink:
    """One device's own MQTT connection, which can be dropped like a lost network."""

    def __init__(self, endpoint: MqttEndpoint, device_id: str, password: str) -> None:
        self.endpoint = endpoint
        self.device_id = device_id
        self.password = password
        self.client: mqtt.Client | None = None
        self.pending: list[mqtt.MQTTMessageInfo] = []
        self.dropping: threading.Thread | None = None

    def connect(self, change: LinkChange) -> None:
        if self.client is not None:
            self.drop()
        if self.dropping is not None:
            self.dropping.join(10)
            self.dropping = None
        client = new_client(
            self.endpoint.with_account(self.device_id, self.password),
            self.device_id,
            clean_session=True,
        )
        client.max_inflight_messages_set(200)
        if change.will is not None:
            will = change.will
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect(self.endpoint.host, self.endpoint.port, keepalive=60)
        client.loop_start()
        if not connected.wait(10):
            client.loop_stop()
            raise RuntimeError(f"{self.device_id}: the broker did not accept the connection")
        self.client = client

    def publish(self, publication: Publication) -> None:
        if self.client is None:
            raise RuntimeError(f"{self.device_id}: publication while not connected")
        info = self.client.publish(
            publication.topic, publication.payload, qos=publication.qos, retain=publication.retain
        )
        self.pending.append(info)
        if len(self.pending) > 500:
            self.settle(0.0)

    def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the broker to acknowledge what was published."""
        deadline = time.monotonic() + timeout
        keep = []
        for info in self.pending:
            if not info.is_published():
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                keep.append(info)
        self.pending = keep

    def drop(self) -> None:
        """Lose the network: no DISCONNECT, so the broker publishes the will. Done on a thread
        of its own (stopping paho's loop takes up to a second), so the player keeps time."""
        client, self.client = self.client, None
        if client is None:
            return
        pending, self.pending = self.pending, []
        self.dropping = threading.Thread(
            target=self._cut, args=(client, pending), name=f"drop-{self.device_id}", daemon=True
        )
        self.dropping.start()

    @staticmethod
    def _cut(client: mqtt.Client, pending: list[mqtt.MQTTMessageInfo]) -> None:
        for info in pending:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(5.0)
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.close()

    def close(self) -> None:
        if self.dropping is not None:
            self.dropping.join(10)
        client, self.client = self.client, None
        if client is None:
            return
        self.settle(10.0)
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True)
class RegionStep:
    at: float
    subject_id: int
    region_id: str


@dataclass(frozen=True)
class ReleaseStep:
    at: float
    subject_ids: tuple[int, ...]
    devices: tuple[str, ...]
    fixes: int  # what ingest must have stored before the subjects are let go


Step = Publication | LinkChange | RegionStep | ReleaseStep


def all_steps(runs: Sequence[ScenarioRun], subject_ids: dict[str, dict[str, int]]) -> list[Step]:
    steps: list[tuple[float, int, Step]] = []
    for run in runs:
        for step in run.steps():
            rank = 1 if isinstance(step, Publication) else 0
            if isinstance(step, LinkChange) and step.action is LinkAction.DROP:
                rank = 2
            steps.append((step.at, rank, step))
        over = run.end.timestamp()
        fixes, devices = expected_fixes([run])
        ids = tuple(subject_ids[run.scenario].values())
        steps.append((over, 3, ReleaseStep(over, ids, tuple(devices), fixes)))
        for subject in run.plan.subjects:
            for change in subject.region_changes:
                sid = subject_ids[run.scenario][subject.key]
                steps.append(
                    (
                        change.at.timestamp(),
                        0,
                        RegionStep(change.at.timestamp(), sid, change.region_id),
                    )
                )
    steps.sort(key=lambda s: (s[0], s[1]))
    return [s[2] for s in steps]


class Player:
    def __init__(
        self,
        settings: Settings,
        passwords: dict[str, str],
        origin: float,
        wall_origin: float,
        speedup: float,
    ) -> None:
        self.settings = settings
        self.endpoint = MqttEndpoint.parse(settings.mqtt_device_url)
        self.links = {d: DeviceLink(self.endpoint, d, p) for d, p in passwords.items()}
        self.origin = origin
        self.wall_origin = wall_origin
        self.speedup = speedup
        self.published = 0
        self.releasing: list[threading.Thread] = []

    def wall(self, at: float) -> float:
        return self.wall_origin + (at - self.origin) / self.speedup

    def play(
        self,
        steps: Sequence[Step],
        stop: threading.Event,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        report_every = max(1, len(steps) // 40)
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            marked_at, mark_written = -math.inf, -math.inf
            try:
                for index, step in enumerate(steps):
                    delay = self.wall(step.at) - time.time()
                    # Everything before this step is out: the rules' clock may run up to it and
                    # no further (migration 0015), so a player that stalls (a busy machine: a
                    # tenth of a second is a minute at 600x) holds the rules back instead of
                    # making its devices look silent.
                    if step.at > marked_at and (
                        delay > MARK_EVERY_S or time.monotonic() - mark_written >= MARK_EVERY_S
                    ):
                        rule_clock.set_played_until(conn, step.at)
                        marked_at, mark_written = step.at, time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    if isinstance(step, ReleaseStep):
                        # the scenario's last fixes may still be on their way through ingest:
                        # let them land (on a thread, the player keeps time), then release
                        releasing = threading.Thread(
                            target=self._release, args=(step,), name="release", daemon=True
                        )
                        releasing.start()
                        self.releasing.append(releasing)
                    elif isinstance(step, RegionStep):
                        move_subject(conn, step.subject_id, step.region_id)
                    elif isinstance(step, Publication):
                        self.links[step.device_id].publish(step)
                        self.published += 1
                    elif step.action is LinkAction.CONNECT:
                        self.links[step.device_id].connect(step)
                    else:
                        self.links[step.device_id].drop()
                    if progress is not None and (
                        index % report_every == 0 or index == len(steps) - 1
                    ):
                        progress(Progress(index + 1, len(steps), step.at, max(0.0, -delay)))
            finally:
                rule_clock.set_played_until(conn, None)  # the tail runs on the clock alone
                for link in self.links.values():
                    link.close()
                for releasing in self.releasing:
                    releasing.join(60)

    def _release(self, step: ReleaseStep) -> None:
        with psycopg.connect(self.settings.database_url) as conn:
            wait_stored(conn, list(step.devices), step.fixes, timeout=30.0)
            release(conn, step.subject_ids, step.at)


# -- the whole run -------------------------------------------------------------------------


def expected_fixes(runs: Iterable[ScenarioRun]) -> tuple[int, list[str]]:
    total, devices = 0, []
    for run in runs:
        fixes, _ = read_trace(run.publications)
        total += len({(f.device_id, f.ts) for f in fixes})
        devices += [d.device_id for d in run.plan.devices]
    return total, devices


def wait_stored(
    conn: psycopg.Connection, devices: list[str], expected: int, timeout: float = 60.0
) -> int:
    """Until ingest has stored every fix (or stops making progress for five seconds)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        stored = count_stored(conn, devices)
        if stored >= expected or time.monotonic() > deadline:
            return stored
        if stored != last:
            last, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > 5.0:
            return stored
        time.sleep(0.2)


def run_scenarios(
    settings: Settings,
    names: Sequence[str],
    *,
    speedup: float = DEFAULT_SPEEDUP,
    on_date: date | None = None,
    manifest_path: Path,
    stop: threading.Event | None = None,
    echo: Callable[[str], object] = print,
    noise_model: str = DEFAULT_NOISE_MODEL,
) -> Manifest:
    """Provision, play all `names` together on one compressed clock, wait for ingest, release;
    the devices' fixes are drawn from `noise_model`, recorded in the manifest for scoring."""
    scenarios = [load_scenario(find_scenario(n)) for n in names]
    day = on_date or default_date(s.duration_s for s in scenarios)
    run_id = secrets.token_hex(3)
    runs = [
        build_timeline(s, rid, on_date=day, noise_model=noise_model)
        for s, rid in zip(scenarios, run_ids(run_id, len(scenarios)), strict=True)
    ]
    return play_runs(
        settings,
        runs,
        run_id,
        day,
        speedup=speedup,
        manifest_path=manifest_path,
        stop=stop,
        echo=echo,
        noise_model=noise_model,
    )


def play_runs(
    settings: Settings,
    runs: Sequence[ScenarioRun],
    run_id: str,
    day: date,
    *,
    speedup: float = DEFAULT_SPEEDUP,
    manifest_path: Path,
    stop: threading.Event | None = None,
    echo: Callable[[str], object] = print,
    noise_model: str = DEFAULT_NOISE_MODEL,
) -> Manifest:
    """Play timelines already built (with ids from `run_ids(run_id, ...)`, moved to `day`):
    what `run_scenarios` does once it has loaded the library, and what a benchmark that
    writes its own scenarios (`bench false-alerts --pipeline`) calls directly."""
    stop = stop or threading.Event()
    origin = min(r.start.timestamp() for r in runs)
    end = max(r.end.timestamp() for r in runs)
    admin = device_accounts(settings)
    with psycopg.connect(settings.database_url) as conn:
        echo(f"provisioning {len(runs)} scenario(s) on {day.isoformat()} ...")
        subject_ids, passwords = provision(conn, admin, runs)
        expected, devices = expected_fixes(runs)
        wall_origin = time.time() + LEAD_S
        manifest = Manifest(
            run_id,
            day.isoformat(),
            speedup,
            origin,
            wall_origin,
            end,
            [r.scenario for r in runs],
            subject_ids,
            {r.scenario: [d.device_id for d in r.plan.devices] for r in runs},
            expected_fixes=expected,
            noise_model=noise_model,
        )
        manifest.save(manifest_path)
        rule_clock.set_clock(conn, origin, wall_origin, speedup)
        span = (end - origin) / speedup
        echo(
            f"playing {sum(len(r.publications) for r in runs)} messages from {len(devices)}"
            f" devices: {(end - origin) / 3600:.1f} h of scenario time in {span:.0f} s"
            f" (x{speedup:g})"
        )
        player = Player(settings, passwords, origin, wall_origin, speedup)

        def show(p: Progress) -> None:
            stamp = datetime.fromtimestamp(p.scenario_time, UTC).strftime("%a %H:%M")
            lag = f", {p.behind_s:.1f} s behind" if p.behind_s > 1 else ""
            echo(f"  {100 * p.done / p.total:5.1f} %  scenario time {stamp} UTC{lag}")

        try:
            player.play(all_steps(runs, subject_ids), stop, show)
            manifest.published = player.published
            # let the clock run past the end, so clock rules (silence, curfew start) fire
            remaining = player.wall(end + TAIL_S) - time.time()
            if remaining > 0 and not stop.is_set():
                echo(f"  letting the clock run to the end ({remaining:.0f} s)")
                stop.wait(remaining)
            manifest.stored_fixes = wait_stored(conn, devices, expected)
            manifest.finished = not stop.is_set()
        finally:
            finish(conn, manifest)
            manifest.save(manifest_path)
    echo(
        f"published {manifest.published} messages; ingest stored {manifest.stored_fixes} of"
        f" {manifest.expected_fixes} fixes; manifest {manifest_path}"
    )
    return manifest


# -- scoring what the platform raised -----------------------------------------------------


def raised_alerts(
    conn: psycopg.Connection, subject_ids: Iterable[int], until: float
) -> list[RaisedAlert]:
    return [
        RaisedAlert(
            r.type,
            str(r.subject_id),
            r.opened_at,
            late=bool(r.late),
            first_fix_at=r.first_fix_at,
            alert_id=str(r.id),
        )
        for r in raised_for(conn, list(subject_ids), until)
    ]


def score_manifest(
    settings: Settings, manifest: Manifest
) -> tuple[list[ScoreCard], list[ScoreCard]]:
    """Rebuild each scenario's timeline from the manifest and score the platform's alerts."""
    day = date.fromisoformat(manifest.on_date)
    cards, naive = [], []
    with psycopg.connect(settings.database_url) as conn:
        for name, rid in zip(
            manifest.scenarios, run_ids(manifest.run_id, len(manifest.scenarios)), strict=True
        ):
            run = build_timeline(
                load_scenario(find_scenario(name)),
                rid,
                on_date=day,
                noise_model=manifest.noise_model,
            )
            ids = manifest.subjects.get(name, {})
            raised = raised_alerts(conn, ids.values(), run.end.timestamp())
            cards.append(score_run(run, raised, {str(v): k for k, v in ids.items()}))
            naive.append(score_run(run, naive_alerts(run)))
    return cards, naive
