"""The notification dispatcher against the real database, the real broker and a real HTTP receiver:
signed webhooks, retries with backoff, a receiver that is down, MQTT at QoS 1, and SIGKILL of a
`tagwatch dispatch` process mid-stream. The receivers listen on loopback over http, so the
dispatchers here allow-list 127.0.0.1 (tests/adversarial/test_webhooks.py covers the refusals)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from tagwatch.alerts import lifecycle
from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig, alert_topic, notification_body
from tagwatch.alerts.signing import sign, signed_headers, verify_signature
from tagwatch.bench.harness import LOOPBACK_ALLOW, WebhookReceiver, allowing_loopback
from tagwatch.settings import MqttEndpoint, Settings
from tests.alerts.test_lifecycle import make_alert, make_subject
from tests.support import connect, fresh_id, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.serial]

FAST = DispatcherConfig(
    workers=2,
    batch_size=10,
    poll_interval_s=0.2,
    backoff_base_s=0.2,
    backoff_cap_s=1.0,
    http_timeout_s=3.0,
    mqtt_timeout_s=5.0,
)


@pytest.fixture
def conn(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def start_dispatcher(settings) -> Iterator:
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(**overrides: object) -> Dispatcher:
        config = dataclasses.replace(FAST, mqtt_client_id=fresh_id("dispatch"), **overrides)
        dispatcher = Dispatcher(allowing_loopback(settings), config)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return dispatcher

    yield start
    for stop, _ in running:
        stop.set()
    for _, thread in running:
        thread.join(30)
        assert not thread.is_alive(), "the dispatcher did not stop"


@pytest.fixture
def subscribe_webhook(settings) -> Iterator:
    """A webhook subscription for one region; deactivated afterwards, and what it left pending
    is marked failed, so later tests' dispatchers do not keep retrying it."""
    made: list[int] = []

    def make(url: str, region: str, secret: str | None = None, **columns: object) -> int:
        with psycopg.connect(settings.database_url) as c:
            names = ["name", "url", "secret", "regions", *columns]
            values = [fresh_id("hook"), url, secret or fresh_id("secret"), [region]]
            values += list(columns.values())
            row = c.execute(
                f"INSERT INTO webhook_subscriptions ({', '.join(names)})"
                f" VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
                values,
            ).fetchone()
        made.append(row[0])
        return row[0]

    yield make
    with psycopg.connect(settings.database_url) as c:
        for wid in made:
            c.execute("UPDATE webhook_subscriptions SET active = false WHERE id = %s", (wid,))
            c.execute(
                "UPDATE deliveries SET status = 'failed', last_error = 'test over'"
                " WHERE channel = %s AND status = 'pending'",
                (f"webhook:{wid}",),
            )


def outbox_ids(conn: psycopg.Connection, alert_id: int) -> list[int]:
    rows = conn.execute("SELECT id FROM outbox WHERE alert_id = %s ORDER BY id", (alert_id,))
    return [r[0] for r in rows]


def delivery(conn: psycopg.Connection, outbox_id: int, channel: str) -> tuple:
    return conn.execute(
        "SELECT status, attempts, last_error, delivered_at FROM deliveries"
        " WHERE outbox_id = %s AND channel = %s",
        (outbox_id, channel),
    ).fetchone()


def attempts(conn: psycopg.Connection, outbox_id: int, channel: str) -> list[tuple]:
    return conn.execute(
        "SELECT ok, status_code, error, duration_ms, extract(epoch FROM at)::float8"
        " FROM delivery_attempts WHERE outbox_id = %s AND channel = %s ORDER BY id",
        (outbox_id, channel),
    ).fetchall()


def status_of(conn: psycopg.Connection, outbox_id: int, channel: str) -> str | None:
    row = delivery(conn, outbox_id, channel)
    return row[0] if row else None


# ---------------------------------------------------------------------- pure parts


def test_signatures_verify_only_the_exact_timestamp_body_and_secret():
    body = notification_body(42, {"event": "opened", "type": "absconder", "lat": -33.9})
    now = time.time()
    ts = str(int(now))
    header = sign("s3cret", ts, body)
    assert header.startswith("sha256=")
    assert len(header) == len("sha256=") + 64
    assert signed_headers("s3cret", body, now) == {
        "X-Tagwatch-Timestamp": ts,
        "X-Tagwatch-Signature": header,
    }
    assert verify_signature("s3cret", body, header, ts)
    assert verify_signature(b"s3cret", body, header.upper().replace("SHA256=", "sha256="), ts)
    assert not verify_signature("other", body, header, ts)
    assert not verify_signature("s3cret", body + b" ", header, ts)
    assert not verify_signature("s3cret", body, header, str(int(ts) + 1))
    assert not verify_signature("s3cret", body, header, None)
    assert not verify_signature("s3cret", body, None, ts)
    assert not verify_signature("s3cret", body, "", ts)
    assert not verify_signature("s3cret", body, header.replace("sha256=", "sha1="), ts)
    assert not verify_signature("", body, sign("", ts, body), ts)
    # the window: 300 s either way by default, or the receiver's own
    assert verify_signature("s3cret", body, header, ts, now=now + 299)
    assert not verify_signature("s3cret", body, header, ts, now=now + 301)
    assert not verify_signature("s3cret", body, header, ts, now=now - 301)
    assert not verify_signature("s3cret", body, header, ts, now=now + 61, window_s=60)
    for odd in ("-1", "1e9", " ", "１２３", "0x10", "9" * 13):
        assert not verify_signature("s3cret", body, sign("s3cret", odd, body), odd), odd
    # the same bytes every time: retries carry the same signature
    assert notification_body(42, {"lat": -33.9, "type": "absconder", "event": "opened"}) == body
    assert json.loads(body)["notification_id"] == 42


def test_backoff_doubles_with_jitter_up_to_the_cap_and_settings_come_from_the_environment(
    monkeypatch,
):
    for name, value in {
        "TAGWATCH_DISPATCH_BACKOFF_BASE_S": "2",
        "TAGWATCH_DISPATCH_BACKOFF_CAP_S": "600",
        "TAGWATCH_DISPATCH_MAX_ATTEMPTS": "30",
        "TAGWATCH_DISPATCH_CA_FILE": "/etc/tracing-ca.pem",
        "TAGWATCH_DISPATCH_MQTT_CLIENT_ID": "d-1",
        "TAGWATCH_DISPATCH_WORKERS": "",  # empty: the default, as before
    }.items():
        monkeypatch.setenv(name, value)
    config = DispatcherConfig.from_settings(Settings())
    assert config.workers == 4
    assert (config.backoff_base_s, config.max_attempts) == (2.0, 30)
    assert config.ca_file == "/etc/tracing-ca.pem"
    assert config.mqtt_client_id == "d-1"
    for n, full in [(1, 2), (2, 4), (3, 8), (9, 512), (10, 600), (29, 600)]:
        delays = [config.backoff_s(n) for _ in range(200)]
        assert all(0.5 * full <= d <= full for d in delays), (n, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.1 * full  # jittered, not in lockstep
    total = sum(min(600, 2 * 2 ** (n - 1)) for n in range(1, 30))
    assert 2 * 3600 < total < 5 * 3600  # the defaults keep trying for hours
    assert alert_topic("za-wc") == "em/v1/alerts/za-wc"
    assert alert_topic(None) == "em/v1/alerts/unassigned"
    assert alert_topic("a/#") == "em/v1/alerts/unassigned"
    with pytest.raises(ValueError, match="workers"):
        DispatcherConfig(workers=0)
    # a bad value is refused by the one settings object, naming the setting (check-config)
    monkeypatch.setenv("TAGWATCH_DISPATCH_MAX_ATTEMPTS", "0")
    with pytest.raises(ValidationError, match="dispatch_max_attempts"):
        Settings()


def test_check_config_names_a_bad_dispatcher_setting(tmp_path):
    """The dispatcher's settings are validated by the one settings object, so `check-config`
    (and every command) refuses a bad TAGWATCH_DISPATCH_* value by name instead of the
    dispatcher failing later."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWATCH_")}
    env |= {
        "TAGWATCH_ENVIRONMENT": "development",
        "TAGWATCH_DISPATCH_WORKERS": "many",
        "TAGWATCH_ENV_FILE": str(tmp_path / "no-env-file"),  # not a checkout's .tagwatch/env
    }
    check = subprocess.run(  # from this checkout (cwd), not whichever tagwatch is installed
        [sys.executable, "-m", "tagwatch", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1
    assert "invalid settings" in check.stderr
    assert "dispatch_workers" in check.stderr


# ---------------------------------------------------------------------- webhooks


def test_a_signed_webhook_is_delivered_at_once_and_verifiable(
    conn, start_dispatcher, subscribe_webhook
):
    sid, region = make_subject(conn)
    secret = fresh_id("secret")
    with WebhookReceiver() as receiver:
        wid = subscribe_webhook(receiver.url, region, secret)
        # a second subscription for this region that only wants absconders gets nothing
        other = subscribe_webhook(receiver.url, region, types=["absconder"])
        start_dispatcher(poll_interval_s=5.0)  # only NOTIFY can make this prompt
        time.sleep(1.0)
        committed = time.time()
        alert_id = make_alert(conn, sid, "strap_tamper")
        (oid,) = outbox_ids(conn, alert_id)
        assert wait_for(lambda: receiver.count() >= 1, timeout=10)
        got = receiver.received[0]
        assert got.at - committed < 2.0, "not woken by the insert's NOTIFY (poll is 5 s)"
        assert got.path == "/hook"
        assert got.signed_by(secret)
        assert not got.signed_by("not-the-secret")
        assert verify_signature(
            secret, got.body, got.headers["X-Tagwatch-Signature"], got.timestamp
        )
        assert got.headers["X-Tagwatch-Notification-Id"] == str(oid)
        assert abs(int(got.headers["X-Tagwatch-Timestamp"]) - time.time()) < 60
        assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert got.headers["Content-Type"] == "application/json"
        note = got.json
        assert note["notification_id"] == oid
        assert (note["event"], note["type"], note["severity"]) == (
            "opened",
            "strap_tamper",
            "critical",
        )
        assert (note["alert_id"], note["subject_id"], note["region"]) == (alert_id, sid, region)
        assert wait_for(lambda: status_of(conn, oid, f"webhook:{wid}") == "delivered", 5)
        _, count, error, delivered_at = delivery(conn, oid, f"webhook:{wid}")
        assert (count, error) == (1, None)
        assert delivered_at is not None
        [(ok, code, err, ms, _)] = attempts(conn, oid, f"webhook:{wid}")
        assert (ok, code, err) == (True, 200, None)
        assert 0 < ms < 5000
        assert delivery(conn, oid, f"webhook:{other}") is None
        time.sleep(0.5)
        assert receiver.count() == 1
    # the secret was inserted in plaintext (as before migration 0011): the dispatcher encrypted
    # it before using it, and the plaintext column is empty now
    stored, sealed = conn.execute(
        "SELECT secret, secret_encrypted FROM webhook_subscriptions WHERE id = %s", (wid,)
    ).fetchone()
    assert stored is None and sealed and secret not in sealed


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_recorded(
    conn, start_dispatcher, subscribe_webhook
):
    sid, region = make_subject(conn)
    secret = fresh_id("secret")
    with WebhookReceiver(fail_first=3) as receiver:
        wid = subscribe_webhook(receiver.url, region, secret)
        channel = f"webhook:{wid}"
        alert_id = make_alert(conn, sid)
        (oid,) = outbox_ids(conn, alert_id)
        start_dispatcher()
        assert wait_for(lambda: status_of(conn, oid, channel) == "delivered", timeout=15)
        rows = attempts(conn, oid, channel)
        assert [(ok, code, err) for ok, code, err, _, _ in rows] == [
            (False, 500, "HTTP 500"),
            (False, 500, "HTTP 500"),
            (False, 500, "HTTP 500"),
            (True, 200, None),
        ]
        assert delivery(conn, oid, channel)[:3] == ("delivered", 4, None)
        # waits of base * 2^(n-1) x [0.5, 1) after the n-th failure (base 0.2 s, cap 1 s)
        times = [r[4] for r in rows]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for n, gap in enumerate(gaps, start=1):
            full = min(1.0, 0.2 * 2 ** (n - 1))
            assert 0.5 * full - 0.02 <= gap <= full + 0.5, (n, gaps)
        assert gaps[2] > gaps[0]
        # every try carried the same signed bytes and the same id
        assert len({r.body for r in receiver.received}) == 1
        assert {r.notification_id for r in receiver.received} == {str(oid)}
        assert all(r.signed_by(secret) for r in receiver.received)
        assert len(receiver.ok()) == 1


def test_a_receiver_that_is_down_gets_it_once_it_is_back(conn, start_dispatcher, subscribe_webhook):
    sid, region = make_subject(conn)
    receiver = WebhookReceiver()  # its port is chosen but nothing listens yet
    wid = subscribe_webhook(receiver.url, region)
    channel = f"webhook:{wid}"
    alert_id = make_alert(conn, sid, "absconder")
    (oid,) = outbox_ids(conn, alert_id)
    start_dispatcher()
    assert wait_for(lambda: len(attempts(conn, oid, channel)) >= 3, timeout=10)
    status, count, error, _ = delivery(conn, oid, channel)
    assert status == "pending"
    assert count >= 3
    assert "refused" in error.lower()
    assert all(not ok and code is None for ok, code, *_ in attempts(conn, oid, channel))
    with receiver:
        assert wait_for(lambda: status_of(conn, oid, channel) == "delivered", timeout=10)
        assert receiver.ids() == [str(oid)]
        assert attempts(conn, oid, channel)[-1][:2] == (True, 200)


def test_after_max_attempts_a_delivery_fails_for_good(conn, start_dispatcher, subscribe_webhook):
    sid, region = make_subject(conn)
    with WebhookReceiver(fail_first=1000) as receiver:
        wid = subscribe_webhook(receiver.url, region)
        channel = f"webhook:{wid}"
        alert_id = make_alert(conn, sid)
        (oid,) = outbox_ids(conn, alert_id)
        start_dispatcher(max_attempts=3)
        assert wait_for(lambda: status_of(conn, oid, channel) == "failed", timeout=10)
        assert delivery(conn, oid, channel)[:3] == ("failed", 3, "HTTP 500")
        time.sleep(1.5)
        assert receiver.count() == 3
        assert len(attempts(conn, oid, channel)) == 3


# ---------------------------------------------------------------------- MQTT


def test_mqtt_notifications_reach_a_subscriber_on_the_region_topic_at_qos1(
    conn, settings, start_dispatcher
):
    sid, region = make_subject(conn)
    broker = MqttEndpoint.parse(settings.mqtt_url)
    received: list = []
    subscribed = threading.Event()
    client = connect(
        settings.mqtt_url, broker.username, broker.password, client_id=fresh_id("tracer")
    )
    client.on_message = lambda _c, _u, msg: received.append(msg)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(f"em/v1/alerts/{region}", qos=1)
    try:
        assert subscribed.wait(10)
        start_dispatcher()
        alert_id = make_alert(conn, sid, "exclusion_zone_entry")
        assert wait_for(lambda: len(received) >= 1, timeout=10)
        lifecycle.acknowledge(conn, alert_id, "op-ann")
        lifecycle.resolve(conn, alert_id, "op-ann", "confirmed", None)
        assert wait_for(lambda: len(received) >= 3, timeout=10)
        time.sleep(0.3)
    finally:
        client.disconnect()
        client.loop_stop()
    ids = outbox_ids(conn, alert_id)
    bodies = sorted((json.loads(m.payload) for m in received), key=lambda b: b["notification_id"])
    assert [b["notification_id"] for b in bodies] == ids
    assert [(b["event"], b["status"]) for b in bodies] == [
        ("opened", "open"),
        ("acknowledged", "acknowledged"),
        ("resolved", "resolved"),
    ]
    assert {m.topic for m in received} == {f"em/v1/alerts/{region}"}
    assert {m.qos for m in received} == {1}
    assert all(b["alert_id"] == alert_id and b["region"] == region for b in bodies)
    for oid in ids:
        assert wait_for(lambda oid=oid: status_of(conn, oid, "mqtt") == "delivered", 5)
        [(ok, code, err, _, _)] = attempts(conn, oid, "mqtt")
        assert (ok, code, err) == (True, None, None)


# ---------------------------------------------------------------------- SIGKILL


class DispatchProcess:
    """`tagwatch dispatch` as a real subprocess."""

    def __init__(self, service_env: dict[str, str], log_path: Path) -> None:
        self.env = {
            **os.environ,
            **service_env,
            "TAGWATCH_ENVIRONMENT": "test",
            "TAGWATCH_DISPATCH_WORKERS": "2",
            "TAGWATCH_DISPATCH_BATCH_SIZE": "5",
            "TAGWATCH_DISPATCH_HTTP_CONCURRENCY": "10",
            "TAGWATCH_DISPATCH_POLL_INTERVAL_S": "0.2",
            "TAGWATCH_DISPATCH_BACKOFF_BASE_S": "0.2",
            "TAGWATCH_DISPATCH_BACKOFF_CAP_S": "1",
            "TAGWATCH_DISPATCH_HTTP_TIMEOUT_S": "5",
            "TAGWATCH_WEBHOOK_ALLOW_HOSTS": LOOPBACK_ALLOW,
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**self.env, "TAGWATCH_DISPATCH_MQTT_CLIENT_ID": fresh_id("dispatch")}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tagwatch", "dispatch"], env=env, stdout=log, stderr=log
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def test_sigkill_of_the_dispatcher_mid_stream_loses_nothing(
    conn, service_env, subscribe_webhook, tmp_path
):
    sid, region = make_subject(conn)
    secret = fresh_id("secret")
    process = DispatchProcess(service_env, tmp_path / "dispatch.log")
    with WebhookReceiver(delay_s=0.25) as receiver:
        wid = subscribe_webhook(receiver.url, region, secret)
        channel = f"webhook:{wid}"
        alert_ids = [make_alert(conn, sid) for _ in range(80)]
        try:
            process.start()
            assert wait_for(lambda: receiver.count() >= 25, timeout=20), process.log()[-3000:]
            assert wait_for(lambda: receiver.in_flight > 0, timeout=5)
            process.kill()  # requests are in flight: sent, not yet confirmed, not yet marked
            in_flight_at_kill = receiver.count()
            assert process.process.returncode == -signal.SIGKILL
            assert in_flight_at_kill < 80, "the kill came too late to be mid-stream"
            process.start()
            alert_ids += [make_alert(conn, sid) for _ in range(20)]  # more arrive meanwhile
            expected = {str(i) for a in alert_ids for i in outbox_ids(conn, a)}
            assert len(expected) == 100

            def all_delivered() -> bool:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE d.status = 'delivered'), count(*)"
                    " FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
                    " WHERE o.alert_id = ANY(%s)",
                    (alert_ids,),
                ).fetchone()
                return row[0] == row[1] == 200  # webhook and mqtt for each

            assert wait_for(all_delivered, timeout=40), process.log()[-3000:]
            assert process.stop() == 0
        finally:
            process.kill()
    # at least once: every notification arrived; deduplicated by id, exactly the expected set
    assert receiver.unique_ids() == expected
    assert len(receiver.ids()) > len(expected), "the in-flight requests were not re-sent"
    assert all(r.signed_by(secret) for r in receiver.received)
    assert "dispatch stopped" in process.log()
    recorded = conn.execute(
        "SELECT count(*) FROM delivery_attempts WHERE channel = %s AND ok", (channel,)
    ).fetchone()[0]
    assert recorded == 100  # one confirmed attempt per notification


def test_a_worker_waiting_on_a_slow_receiver_stays_live(conn, settings, subscribe_webhook) -> None:
    """A receiver that takes 6 s to answer, with the liveness stall time at 2.5 s: the delivery
    worker waits for it beating its heartbeat (once a second), so /healthz stays 200 (a restart
    would only claim the same row again and post it again)."""
    import httpx

    sid, region = make_subject(conn)
    probed = allowing_loopback(settings).model_copy(update={"probe_port": 0, "probe_stall_s": 2.5})
    config = dataclasses.replace(
        FAST, mqtt_client_id=fresh_id("dispatch"), workers=1, http_timeout_s=10.0
    )
    dispatcher = Dispatcher(probed, config)
    server = dispatcher.start_probes()
    assert server is not None
    stop = threading.Event()
    runner = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    runner.start()

    def health() -> int:
        return httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code

    try:
        with WebhookReceiver(delay_s=6.0) as receiver:
            subscribe_webhook(receiver.url, region)
            assert wait_for(lambda: health() == 200, 10)
            make_alert(conn, sid, "strap_tamper")
            assert wait_for(lambda: receiver.count() >= 1, 10)  # the post is in, answer due
            seen = []
            while receiver.count() >= 1 and len(seen) < 16:  # about 5 s, past the stall time
                seen.append(health())
                time.sleep(0.3)
            assert seen and set(seen) == {200}, seen
    finally:
        stop.set()
        runner.join(30)
