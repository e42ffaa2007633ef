"""The point of it all, end to end: a strap is cut, the subject flees, and a tracing unit's
webhook receives a signed absconder notification with the trail within seconds — through the
real broker, ingest, alert engine, outbox and dispatcher, with the scenario's own devices."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig
from tagwatch.bench.harness import WebhookReceiver, allowing_loopback
from tagwatch.simulators.runner import run_scenarios, score_manifest
from tests.alerts.channel_support import without_escalation
from tests.support import fresh_id, wait_for

# serial: timed delivery through a dispatcher that works the whole outbox; run on its own after
# the parallel part (scripts/test.sh), on a fresh database and an idle second core.
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def test_a_tracing_unit_gets_the_signed_absconder_with_its_trail_within_seconds(
    settings, running_ingest, tmp_path: Path
):
    secret = fresh_id("tracing-secret")
    config = dataclasses.replace(
        DispatcherConfig(),
        mqtt_client_id=fresh_id("dispatch"),
        poll_interval_s=0.5,
        backoff_base_s=0.2,
        backoff_cap_s=1.0,
    )
    stop = threading.Event()
    with WebhookReceiver() as receiver, psycopg.connect(settings.database_url) as conn:
        (hook,) = conn.execute(
            "INSERT INTO webhook_subscriptions (name, url, secret, types, min_severity)"
            " VALUES ('tracing unit', %s, %s, '{absconder}', 'critical') RETURNING id",
            (receiver.url, secret),
        ).fetchone()
        conn.commit()
        dispatcher = Dispatcher(without_escalation(allowing_loopback(settings)), config)
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            manifest = run_scenarios(
                settings,
                ["strap-cut-flight"],
                speedup=1800,
                manifest_path=tmp_path / "run.json",
                echo=lambda _line: None,
            )
            assert manifest.finished
            ids = list(manifest.subjects["strap-cut-flight"].values())
            assert wait_for(lambda: receiver.ok(), 30), "no absconder notification arrived"
            (alert_id, raised_at) = conn.execute(
                "SELECT id, raised_at FROM alerts WHERE subject_id = ANY(%s)"
                " AND type = 'absconder'",
                (ids,),
            ).fetchone()
        finally:
            stop.set()
            thread.join(30)
            conn.execute("UPDATE webhook_subscriptions SET active = false WHERE id = %s", (hook,))
            conn.commit()

    [note] = [r for r in receiver.ok() if r.json["alert_id"] == alert_id]
    assert note.signed_by(secret)
    assert not note.signed_by("another secret")
    body = note.json
    assert body["type"] == "absconder" and body["severity"] == "critical"
    assert body["notification_id"] == int(note.notification_id)
    details = body["details"]
    assert len(details["trail"]) >= 5
    assert {"lat", "lon", "ts"} <= set(details["last_known"])
    assert any(a["type"] == "strap_tamper" for a in details["open_alerts"])
    # within seconds of the alert's commit, on the wall clock
    delay = note.at - raised_at.astimezone(UTC).timestamp()
    assert 0 <= delay < 5, f"webhook {delay:.2f} s after the alert"
    # and the run scores as the scenario says: tamper, jurisdiction exit, absconder, no more
    cards, _ = score_manifest(settings, manifest)
    assert cards[0].passed, (cards[0].missed, cards[0].false)
    assert datetime.now(UTC) > raised_at
