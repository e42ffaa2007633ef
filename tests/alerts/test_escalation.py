"""Escalation of alerts nobody acknowledges, on the real database and dispatcher (issue 16).

Two dispatchers run the acknowledgement timer at once with a short critical deadline: an alert
left open escalates once (one history row, one ``escalated`` outbox row) and its region's
supervisor channel (an e-mail, through aiosmtpd) gets it; an alert acknowledged in time never
escalates, nor does a warning whose severity has no deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tagwatch.alerts import lifecycle
from tagwatch.store import escalations
from tagwatch.store.subjects import add_subject, ensure_region
from tests.alerts.channel_support import Mailbox, open_alert, text_of
from tests.support import fresh_id, wait_for

# serial: timed delivery through a dispatcher that works the whole outbox; run on its own after
# the parallel part (scripts/test.sh), on a fresh database and an idle second core.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

DEADLINE_S = 1.5


@pytest.fixture
def conn(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url) as connection:
        yield connection


def escalation_rows(conn: psycopg.Connection, alert_id: int) -> tuple[int, int]:
    outbox = conn.execute(
        "SELECT count(*) FROM outbox WHERE alert_id = %s AND event = 'escalated'", (alert_id,)
    ).fetchone()
    history = conn.execute(
        "SELECT count(*) FROM alert_history WHERE alert_id = %s AND action = 'escalated'",
        (alert_id,),
    ).fetchone()
    conn.commit()
    assert outbox is not None and history is not None
    return int(outbox[0]), int(history[0])


def test_an_unacknowledged_alert_escalates_once_and_an_acknowledged_one_never(
    conn, smtp_server: Mailbox, add_channel, channel_dispatcher
):
    region = fresh_id("rg")
    ensure_region(conn, region, "Gauteng")
    name = f"Lerato {fresh_id('')}"
    sid = add_subject(conn, name=name, region_id=region, timezone="Africa/Johannesburg")
    conn.commit()
    tracer = add_channel(smtp_server.url("tracer@example.org"), region)
    boss = add_channel(
        smtp_server.url("supervisor@example.org"), region, role="supervisor", escalation=True
    )
    deadlines = {"ack_deadline_critical_s": DEADLINE_S, "ack_deadline_warning_s": None}
    channel_dispatcher(**deadlines)
    channel_dispatcher(**deadlines)  # two timers race for the same alerts
    ignored = open_alert(conn, sid, "strap_tamper")
    handled = open_alert(conn, sid, "absconder")
    warning = open_alert(conn, sid, "gps_lost")  # warnings have no deadline here
    lifecycle.acknowledge(conn, handled, "operator-1")
    opened = time.time()
    assert wait_for(lambda: escalation_rows(conn, ignored) == (1, 1), timeout=15)
    took = time.time() - opened
    print(f"\nescalated {took:.2f} s after opening (deadline {DEADLINE_S} s)")
    assert took >= DEADLINE_S - 0.2
    assert wait_for(lambda: smtp_server.to("supervisor@example.org"), timeout=10)
    time.sleep(2 * DEADLINE_S)  # more timer rounds of both dispatchers
    assert escalation_rows(conn, ignored) == (1, 1)
    assert escalation_rows(conn, handled) == (0, 0)
    assert escalation_rows(conn, warning) == (0, 0)
    (to_boss,) = smtp_server.to("supervisor@example.org")  # only the escalation, not the opening
    assert to_boss["Subject"] == f"ESCALATED [CRITICAL] Strap tampered with: {name}"
    assert "Nobody acknowledged this alert in time" in text_of(to_boss)
    # the tracer's channel got the openings and the re-notification
    subjects = sorted(str(m["Subject"]) for m in smtp_server.to("tracer@example.org"))
    assert f"ESCALATED [CRITICAL] Strap tampered with: {name}" in subjects
    detail = conn.execute(
        "SELECT actor, detail FROM alert_history WHERE alert_id = %s AND action = 'escalated'",
        (ignored,),
    ).fetchone()
    assert detail is not None
    assert detail[0] == "dispatcher" and detail[1]["deadline_s"] == DEADLINE_S
    assert tracer != boss


def test_two_claims_at_once_escalate_an_alert_once(conn, settings):
    region = fresh_id("rg")
    ensure_region(conn, region, region)
    sid = add_subject(conn, name=fresh_id("subject"), region_id=region)
    conn.commit()
    alert_id = open_alert(conn, sid, "victim_proximity")
    conn.execute(
        "UPDATE alerts SET raised_at = now() - interval '1 hour' WHERE id = %s", (alert_id,)
    )
    conn.commit()
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = []

    def claim() -> None:
        with psycopg.connect(settings.database_url) as own:
            barrier.wait()
            with own.transaction():
                found = escalations.escalate_overdue(own, {"critical": 60.0})
            claimed.append([a.id for a in found])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(ids.count(alert_id) for ids in claimed) == 1
    assert escalation_rows(conn, alert_id) == (1, 1)
