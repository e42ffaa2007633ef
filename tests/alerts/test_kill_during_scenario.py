"""SIGKILL of ingest and of the dispatcher in the middle of scenarios played through the real
broker, with the tracing unit's webhook receiver down for the first half: no alert lost, none
duplicated, every notification delivered (signed) once the receiver is back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tagwatch.bench.harness import WebhookReceiver
from tagwatch.simulators.runner import Manifest, run_scenarios, score_manifest
from tests.alerts.test_dispatcher import DispatchProcess
from tests.support import fresh_id, wait_for

# serial: timed delivery through a dispatcher that works the whole outbox; run on its own after
# the parallel part (scripts/test.sh), on a fresh database and an idle second core.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

NAMES = ["exclusion-entry", "strap-cut-flight", "battery-death"]
# 600x: a second of wall time is ten scenario minutes, so a tag's 16-minute silence limit is
# 1.6 s of a 2-core machine running broker, ingest, dispatcher, database and every device's TLS
# connection at once (at 900x a 1.1 s stall of ingest looked like silence).
SPEEDUP = 600.0


def test_sigkill_of_ingest_and_dispatcher_during_scenarios_loses_and_duplicates_nothing(
    settings, service_env, ingest_factory, tmp_path: Path
):
    ingest = ingest_factory(fresh_id("ingest-kill"))
    ingest.start_and_wait()
    receiver = WebhookReceiver()  # the tracing unit's server is down for now
    secret = fresh_id("secret")
    with psycopg.connect(settings.database_url) as conn:
        (hook,) = conn.execute(
            "INSERT INTO webhook_subscriptions (name, url, secret)"
            " VALUES ('tracing unit', %s, %s) RETURNING id",
            (receiver.url, secret),
        ).fetchone()
    dispatch = DispatchProcess(service_env, tmp_path / "dispatch.log")
    # The test's backoff is capped at 1 s (production: 10 min), so the default 30 attempts would
    # be spent in ~25 s, less than the receiver's outage here: give up as late as production does.
    dispatch.env["TAGWATCH_DISPATCH_MAX_ATTEMPTS"] = "10000"
    dispatch.start()
    manifest_path = tmp_path / "run.json"
    outcome: dict[str, object] = {}

    def play() -> None:
        try:
            outcome["manifest"] = run_scenarios(
                settings, NAMES, speedup=SPEEDUP, manifest_path=manifest_path, echo=lambda _: None
            )
        except Exception as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    player = threading.Thread(target=play, name="scenarios")
    player.start()
    try:
        assert wait_for(manifest_path.exists, 60), "the run did not start"
        planned = json.loads(manifest_path.read_text())
        span = (planned["end"] - planned["origin"]) / SPEEDUP

        def at(share: float) -> None:
            time.sleep(max(0.0, planned["wall_origin"] + share * span - time.time()))

        at(0.3)
        ingest.kill()  # SIGKILL: whatever batch was in flight is neither committed nor acked
        time.sleep(0.5)
        ingest.start_and_wait()
        at(0.5)
        dispatch.kill()
        dispatch.start()
        at(0.6)
        receiver.start()
        player.join(300)
        assert not player.is_alive(), "the scenarios did not finish"
        assert "error" not in outcome, outcome.get("error")
        manifest = outcome["manifest"]
        assert isinstance(manifest, Manifest) and manifest.finished
        assert manifest.stored_fixes == manifest.expected_fixes

        cards, _ = score_manifest(settings, manifest)
        for card in cards:  # a duplicate would be a false alert; a lost one, a missed one
            assert not card.missed and not card.false, (card.scenario, card.missed, card.false)
        ids = [sid for per in manifest.subjects.values() for sid in per.values()]
        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT type, subject_id, first_fix_at FROM alerts WHERE subject_id = ANY(%s)",
                (ids,),
            ).fetchall()
            assert len(rows) == len(set(rows)), "an alert was raised twice"
            channel = f"webhook:{hook}"

            def delivered() -> bool:
                (pending,) = conn.execute(
                    "SELECT count(*) FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
                    " JOIN alerts a ON a.id = o.alert_id"
                    " WHERE d.channel = %s AND d.status <> 'delivered' AND a.subject_id = ANY(%s)",
                    (channel, ids),
                ).fetchone()
                conn.commit()
                return pending == 0

            assert wait_for(delivered, 30), "notifications still undelivered"
            expected = {
                str(r[0])
                for r in conn.execute(
                    "SELECT o.id FROM outbox o JOIN deliveries d ON d.outbox_id = o.id"
                    " JOIN alerts a ON a.id = o.alert_id WHERE d.channel = %s"
                    " AND a.subject_id = ANY(%s)",
                    (channel, ids),
                )
            }
        assert len(expected) >= 7  # opens and clears of the three scenarios' alerts
        got = [r for r in receiver.ok() if r.notification_id in expected]
        assert {r.notification_id for r in got} == expected  # each at least once ...
        assert all(r.signed_by(secret) for r in got)  # ... signed, verifiable
    finally:
        dispatch.stop()
        receiver.stop()
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE webhook_subscriptions SET active = false WHERE id = %s", (hook,))
            conn.execute(
                "UPDATE deliveries SET status = 'failed', last_error = 'test over'"
                " WHERE channel = %s AND status = 'pending'",
                (f"webhook:{hook}",),
            )
