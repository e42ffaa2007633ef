"""`tagwatch chaos db-failover`: kill the PostgreSQL primary while fixes flow; prove nothing is
lost and nothing is done twice.

Everything is real and private to a temporary directory: a three-node Patroni cluster with etcd
(`chaos.cluster`, synchronous replication), Mosquitto (`services.up_broker`), and `tagwatch
ingest`, `tagwatch dispatch` and `tagwatch api` as subprocesses, each connecting with the
multi-host URL ``postgresql://…@h1:p1,h2:p2,h3:p3/tagwatch?target_session_attrs=read-write``. A
publisher process (`chaos.publisher`) sends ``rate`` fixes/s from background devices and from
violators that walk in and out of their exclusion zones, so alerts open and clear and their
notifications go to a signed webhook receiver in this process; a prober asks the API every
0.2 s. ``kill_after`` seconds into the run the primary's Patroni and its whole server are
SIGKILLed (a power cut); Patroni promotes the synchronous standby once the leader key expires.

The verdict, read back from the new primary once ingest and the dispatcher have drained:

* fixes: broker-acknowledged publishes vs distinct (device, seq) stored, and rows beyond that
  (a fix stored twice); exactly once means published = distinct = rows.
* alerts duplicated: two alerts of one subject and type opened at the same time or open at once.
* notifications lost: outbox rows (alerts of the violators, the receiver's channel) whose
  notification id never reached the receiver with a 2xx; redeliveries (the same id again, which
  at-least-once delivery allows and receivers deduplicate on) are counted apart.
* seconds until ingest wrote again: from the kill to the start of the first transaction that
  stored a fix (``received_at``), and the new primary's name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

from tagwatch import services
from tagwatch.api.security import hash_password
from tagwatch.bench.harness import Child, WebhookReceiver, add_fenced_subjects
from tagwatch.chaos.cluster import Cluster, Node
from tagwatch.simulators.load import register
from tagwatch.store import failover_checks as checks
from tagwatch.store.migrate import analyze, ensure_database, migrate
from tagwatch.store.roles import PROCESS_ROLES, ensure_roles
from tagwatch.store.users import save_user
from tagwatch.store.webhooks import add_plain

DATABASE = "tagwatch"
REGION = "chaos"
VIOLATOR_CENTRE = (18.60, -33.70)  # lon, lat: away from the background devices
ZONE_RADIUS_M = 200.0
BACKGROUND_INTERVAL_S = 5.0  # each background device's fix interval (so rate x 5 devices)
EXPECTED_INTERVAL_S = 60  # what the devices are registered with: no silence alerts in a run
PROBE_EVERY_S = 0.2
DRAIN_STALL_S = 20.0  # the drain gives up when nothing more was stored for this long
Echo = Callable[[str], object]


# ---------------------------------------------------------------------------------- children


class Publisher:
    """`python -m tagwatch.chaos.publisher` and its JSON lines."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], work: Path) -> None:
        spec_file = work / "publisher.json"
        spec_file.write_text(json.dumps(spec))
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tagwatch.chaos.publisher", str(spec_file)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            msg = f"the publisher did not answer in {timeout:g} s (exit {self.process.poll()})"
            raise RuntimeError(msg) from None

    def go(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self.next(30)["publishing"])

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Prober(threading.Thread):
    """Asks the API for open alerts (a pooled connection, a real query) every 0.2 s."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(name="chaos-api-prober", daemon=True)
        self.base_url = base_url
        self.token = token
        self.results: list[tuple[float, int]] = []  # (time, HTTP status; 0: no answer)
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=5.0) as client:
            while not self.stop.wait(PROBE_EVERY_S):
                at = time.time()
                try:
                    status = client.get("/api/v1/alerts", params={"status": "open"}).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((at, status))

    def back_after(self, killed_at: float) -> float | None:
        """Seconds from the kill to the first probe that succeeded after the last failed one
        (0 when none failed; None when it never came back)."""
        after = [(t, s) for t, s in self.results if t >= killed_at]
        failed = [t for t, s in after if not 200 <= s < 300]
        if not failed:
            return 0.0
        ok = [t for t, s in after if 200 <= s < 300 and t > max(failed)]
        return round(min(ok) - killed_at, 2) if ok else None


# ---------------------------------------------------------------------------------- set-up


@dataclass
class Violator:
    device_id: str
    subject_id: int
    lon: float
    lat: float


def _seed(conn: psycopg.Connection, run: str, count: int) -> list[Violator]:
    """Violator devices, subjects, assignments and one 200 m exclusion zone each."""
    placed = [
        (
            f"cv-{run}-{index:04d}",
            VIOLATOR_CENTRE[0] + 0.03 * (index % 20),
            VIOLATOR_CENTRE[1] - 0.03 * (index // 20),
        )
        for index in range(count)
    ]
    subject_ids = add_fenced_subjects(
        conn,
        (REGION, "Failover run"),
        placed,
        interval_s=EXPECTED_INTERVAL_S,
        zone_radius_m=ZONE_RADIUS_M,
        zone_name="chaos zone",
    )
    return [
        Violator(device_id, subject_id, lon, lat)
        for (device_id, lon, lat), subject_id in zip(placed, subject_ids, strict=True)
    ]


def _environment(cluster: Cluster, broker: services.ServiceState) -> dict[str, str]:
    """The platform's settings: the broker's, and the cluster's multi-host URLs, one login
    role per process as in production."""
    passwords = {role: secrets.token_urlsafe(18) for role in PROCESS_ROLES.values()}
    with psycopg.connect(cluster.superuser_url("postgres"), autocommit=True) as conn:
        ensure_database(conn, DATABASE)
        ensure_roles(conn, passwords)
    return {
        **{k: v for k, v in broker.env().items() if "DATABASE_URL" not in k},
        "TAGWATCH_DATABASE_URL": cluster.superuser_url(DATABASE),
        **{
            f"TAGWATCH_{process.upper()}_DATABASE_URL": cluster.url(role, passwords[role], DATABASE)
            for process, role in PROCESS_ROLES.items()
        },
    }


@contextlib.contextmanager
def _platform(env: dict[str, str], work: Path, api_port: int) -> Iterator[list[Child]]:
    child_env = {
        **os.environ,
        **env,
        "TAGWATCH_ENVIRONMENT": "test",
        "TAGWATCH_INGEST_CLIENT_ID": f"tagwatch-chaos-ingest-{secrets.token_hex(3)}",
        "TAGWATCH_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the receiver: loopback, plain http
    }
    child_env.pop("TAGWATCH_ENV_FILE", None)
    children: list[Child] = []
    try:
        ingest = Child("ingest", ["tagwatch", "ingest"], child_env, work)
        children.append(ingest)
        dispatcher = Child("dispatch", ["tagwatch", "dispatch"], child_env, work)
        children.append(dispatcher)
        api = Child("api", ["tagwatch", "api", "--port", str(api_port)], child_env, work)
        children.append(api)
        ingest.wait_for_log("subscribed to", 120)
        dispatcher.wait_for_log("dispatcher connected to the broker", 60)
        api.wait_for_log("Application startup complete", 60)
        yield children
    finally:
        for child in children:
            child.stop()


# ---------------------------------------------------------------------------------- run


@dataclass
class Failover:
    killed: str
    killed_at: float
    promoted: str | None = None
    promoted_at: float | None = None
    sync_at: float | None = None  # the new primary has a synchronous standby again


def _kill_primary(cluster: Cluster, echo: Echo) -> Failover:
    primary = cluster.primary()
    if primary is None:
        msg = "no primary to kill"
        raise RuntimeError(msg)
    failover = Failover(primary.name, time.time())
    cluster.crash(primary)
    echo(f"killed {primary.name} (Patroni and postmaster, SIGKILL)")
    return failover


def _watch_promotion(cluster: Cluster, failover: Failover, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node: Node | None = cluster.primary()
        if failover.promoted is None and node is not None and node.name != failover.killed:
            failover.promoted, failover.promoted_at = node.name, time.time()
        if failover.promoted is not None and cluster.sync_standby() is not None:
            failover.sync_at = time.time()
            return
        time.sleep(0.1)


def _drain_fixes(url: str, like: str, published: int) -> checks.StoredOnce:
    """Wait until every published fix is stored, or nothing more arrives for a while."""
    last, still_since = -1, time.monotonic()
    while True:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                found = checks.fixes_stored_once(conn, like)
        except psycopg.OperationalError:
            time.sleep(0.5)
            continue
        if found.distinct >= published:
            return found
        if found.distinct != last:
            last, still_since = found.distinct, time.monotonic()
        elif time.monotonic() - still_since > DRAIN_STALL_S:
            return found
        time.sleep(0.5)


def _drain_notifications(
    url: str, subjects: list[int], channel: str, receiver: WebhookReceiver, timeout: float
) -> list[checks.Notification]:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            notes = checks.notifications(conn, subjects, channel)
        got = receiver.unique_ids()
        if all(n.status != "pending" and str(n.outbox_id) in got for n in notes):
            return notes
        if time.monotonic() > deadline:
            return notes
        time.sleep(0.5)


def run(
    rate: float = 2000.0,
    seconds: float = 60.0,
    kill_after: float = 20.0,
    *,
    violators: int = 20,
    clients: int = 2,
    keep: bool = False,
    echo: Echo = print,
) -> dict[str, Any]:
    """The whole run; prints the table and returns the figures."""
    if not 0 < kill_after < seconds:
        msg = "--kill-after must be inside the run (0 < kill-after < seconds)"
        raise ValueError(msg)
    started = time.monotonic()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the prober's every request
    cluster = Cluster.in_new_directory()
    work = cluster.base / "run"
    work.mkdir()
    receiver: WebhookReceiver | None = None
    publisher: Publisher | None = None
    prober: Prober | None = None
    echo(f"starting etcd and a three-node Patroni cluster in {cluster.base} ...")
    try:
        cluster.start()
        primary = cluster.primary()
        sync = cluster.sync_standby()
        echo(
            f"cluster up in {time.monotonic() - started:.0f} s: primary"
            f" {primary.name if primary else '?'}, synchronous standby"
            f" {sync.name if sync else '?'}; hosts {cluster.hosts()}"
        )
        broker = services.up_broker(cluster.base / "broker")
        env = _environment(cluster, broker)
        url = env["TAGWATCH_DATABASE_URL"]
        migrate(url)
        run_id = secrets.token_hex(2)
        secret = secrets.token_urlsafe(24)
        receiver = WebhookReceiver(secret=secret).start()
        background_rate = max(1.0, rate - violators)
        background = max(1, round(background_rate * BACKGROUND_INTERVAL_S))
        prefix = f"cb-{run_id}"
        api_password = secrets.token_urlsafe(18)
        with psycopg.connect(url) as conn:
            add_plain(conn, f"chaos-{run_id}", receiver.url, secret)
            save_user(conn, f"chaos-{run_id}", hash_password(api_password), "admin", ["*"])
            conn.commit()
            walkers = _seed(conn, run_id, violators)
            register(conn, prefix, background, EXPECTED_INTERVAL_S)
            webhook_id = checks.webhook_id_named(conn, f"chaos-{run_id}")
        with psycopg.connect(url, autocommit=True) as conn:
            analyze(conn)
        channel = f"webhook:{webhook_id}"
        subject_ids = [v.subject_id for v in walkers]
        echo(
            f"{background:,} background devices (one fix every {BACKGROUND_INTERVAL_S:g} s) and"
            f" {violators} violators (one fix a second, in and out of their zones)"
        )
        child_env = {**os.environ, **env}
        child_env.pop("TAGWATCH_ENV_FILE", None)
        spec = {
            "clients": clients,
            "background_prefix": prefix,
            "background_count": background,
            "background_rate": background_rate,
            "violators": [[v.device_id, v.lon, v.lat] for v in walkers],
            "seconds": seconds,
        }
        publisher = Publisher(spec, child_env, work)
        publisher.next(60)  # connected
        api_port = services.free_port()
        with _platform(env, work, api_port) as children:
            api_url = f"http://127.0.0.1:{api_port}"
            token = httpx.post(
                f"{api_url}/api/v1/auth/token",
                data={"username": f"chaos-{run_id}", "password": api_password},
                timeout=30,
            ).json()["access_token"]
            prober = Prober(api_url, token)
            prober.start()
            t0 = publisher.go()
            echo(
                f"publishing {rate:,.0f} fixes/s for {seconds:g} s;"
                f" the primary dies at +{kill_after:g} s"
            )
            time.sleep(max(0.0, t0 + kill_after - time.time()))
            failover = _kill_primary(cluster, echo)
            _watch_promotion(cluster, failover, 120)
            if failover.promoted_at is not None:
                echo(
                    f"Patroni promoted {failover.promoted}"
                    f" {failover.promoted_at - failover.killed_at:.1f} s after the kill"
                )
            report = publisher.next(seconds + 180)
            echo(f"published {report['published']:,} fixes; draining ...")
            stored = _drain_fixes(
                url, f"{prefix}-%", report["published"] - report["violator_fixes"]
            )
            violator_stored = _drain_fixes(url, f"cv-{run_id}-%", report["violator_fixes"])
            notes = _drain_notifications(url, subject_ids, channel, receiver, 60)
            prober.stop.set()
            prober.join(5)
            logs = {child.name: child.log() for child in children}
        figures = _figures(
            url=url,
            prefix=prefix,
            run_id=run_id,
            report=report,
            stored=stored,
            violator_stored=violator_stored,
            subject_ids=subject_ids,
            notes=notes,
            receiver=receiver,
            failover=failover,
            prober=prober,
            logs=logs,
        )
        figures["rate"] = rate
        figures["seconds"] = seconds
        figures["run_s"] = round(time.monotonic() - started, 1)
        for line in table(figures):
            echo(line)
        return figures
    finally:
        if prober is not None:
            prober.stop.set()
        if publisher is not None:
            publisher.stop()
        if receiver is not None:
            receiver.stop()
        services.down_broker(cluster.base / "broker")
        cluster.stop()
        if keep:
            echo(f"kept {cluster.base} (logs in {work})")
        else:
            cluster.remove()


def _figures(
    *,
    url: str,
    prefix: str,
    run_id: str,
    report: dict[str, Any],
    stored: checks.StoredOnce,
    violator_stored: checks.StoredOnce,
    subject_ids: list[int],
    notes: list[checks.Notification],
    receiver: WebhookReceiver,
    failover: Failover,
    prober: Prober,
    logs: dict[str, str],
) -> dict[str, Any]:
    killed = datetime.fromtimestamp(failover.killed_at, UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        first = checks.first_write_after(conn, f"c_-{run_id}-%", killed)  # cb- and cv- devices
        last = checks.last_write_before(conn, f"{prefix}-%", killed)
        alerts = checks.alert_count(conn, subject_ids)
        duplicated = checks.duplicate_alerts(conn, subject_ids)
    published = int(report["published"])
    rows = stored.rows + violator_stored.rows
    distinct = stored.distinct + violator_stored.distinct
    delivered = Counter(r.notification_id for r in receiver.ok())
    wanted = {str(n.outbox_id) for n in notes}
    failed = [t for t, s in prober.results if t >= failover.killed_at and not 200 <= s < 300]
    return {
        "published": published,
        "unacknowledged_publishes": int(report["unacknowledged"]),
        "published_per_s": round(published / max(1e-9, report["publish_s"]), 1),
        "stored_rows": rows,
        "stored_distinct": distinct,
        "fixes_lost": max(0, published - distinct),
        "fixes_stored_twice": rows - distinct,
        "alerts": alerts,
        "alerts_duplicated": duplicated,
        "notifications": len(notes),
        "notifications_delivered": len(wanted & set(delivered)),
        "notifications_lost": len(wanted - set(delivered)),
        "notifications_redelivered": sum(delivered[i] - 1 for i in wanted if delivered[i] > 1),
        "notifications_failed": sum(n.status == "failed" for n in notes),
        "bad_signatures": receiver.bad_signatures,
        "killed": failover.killed,
        "new_primary": failover.promoted or "none",
        "promoted_after_s": (
            round(failover.promoted_at - failover.killed_at, 2) if failover.promoted_at else None
        ),
        "synchronous_again_after_s": (
            round(failover.sync_at - failover.killed_at, 2) if failover.sync_at else None
        ),
        "ingest_writing_again_after_s": (
            round((first - killed).total_seconds(), 2) if first is not None else None
        ),
        "ingest_last_write_before_kill_s": (
            round((killed - last).total_seconds(), 2) if last is not None else None
        ),
        "ingest_retries": logs.get("ingest", "").count("database error"),
        "api_probes": len(prober.results),
        "api_failed_after_kill": len(failed),
        "api_back_after_s": prober.back_after(failover.killed_at),
        "api_failed_after_promotion": sum(
            1 for t in failed if failover.promoted_at is not None and t > failover.promoted_at + 2
        ),
    }


def table(f: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "FAILED"

    rows = [
        ("fixes published (broker-acknowledged)", f"{f['published']:,}", ""),
        ("  publish rate, fixes/s", f"{f['published_per_s']:,.0f}", f"target {f['rate']:,.0f}"),
        ("fixes stored, distinct (device, seq)", f"{f['stored_distinct']:,}", ""),
        ("fixes lost", f"{f['fixes_lost']:,}", verdict(f["fixes_lost"] == 0)),
        (
            "fixes stored twice",
            f"{f['fixes_stored_twice']:,}",
            verdict(f["fixes_stored_twice"] == 0),
        ),
        ("alerts raised (violators)", f"{f['alerts']:,}", verdict(f["alerts"] > 0)),
        ("alerts duplicated", f"{f['alerts_duplicated']:,}", verdict(f["alerts_duplicated"] == 0)),
        ("notifications in the outbox (webhook)", f"{f['notifications']:,}", ""),
        (
            "notifications lost",
            f"{f['notifications_lost']:,}",
            verdict(f["notifications_lost"] == 0),
        ),
        ("  redelivered (same id, receiver dedups)", f"{f['notifications_redelivered']:,}", ""),
        ("  bad signatures at the receiver", f"{f['bad_signatures']:,}", ""),
        ("primary killed / new primary", f"{f['killed']} / {f['new_primary']}", ""),
        ("kill → promotion, s", _s(f["promoted_after_s"]), ""),
        ("kill → sync standby again (Patroni's view), s", _s(f["synchronous_again_after_s"]), ""),
        ("kill → ingest writing again, s", _s(f["ingest_writing_again_after_s"]), ""),
        ("ingest database retries", f"{f['ingest_retries']:,}", ""),
        (
            "API probes / failed after the kill",
            f"{f['api_probes']} / {f['api_failed_after_kill']}",
            "",
        ),
        ("kill → API answering again, s", _s(f["api_back_after_s"]), ""),
        (
            "  API failures > 2 s after promotion",
            f"{f['api_failed_after_promotion']}",
            verdict(f["api_failed_after_promotion"] == 0),
        ),
    ]
    width = max(len(r[0]) for r in rows)
    out = [f"{'db-failover':<{width}}  {'value':>14}  verdict"]
    out += [f"{label:<{width}}  {value:>14}  {note}" for label, value, note in rows]
    return out


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
