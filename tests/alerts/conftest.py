"""Fixtures of the human-channel tests (tests/alerts/channel_support.py has the helpers)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import psycopg
import pytest

from tagwatch.alerts.apprise_channel import parse
from tagwatch.alerts.dispatcher import Dispatcher
from tagwatch.bench.harness import allowing_loopback
from tagwatch.store.webhook_secrets import SecretBox
from tests.alerts.channel_support import CONSOLE, FAST, Mailbox
from tests.support import fresh_id


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture
def add_channel(settings) -> Iterator:
    """A channel row as the API writes it (URL sealed); deactivated afterwards, with what it
    left pending failed, so later dispatchers do not keep retrying it."""
    made: list[int] = []
    box = SecretBox(settings.webhook_secret_key)

    def make(url: str, region: str, **columns: object) -> int:
        parsed = parse(url)
        names = ["name", "url_sealed", "url_shown", "scheme", "regions", *columns]
        values = [fresh_id("mail"), box.seal(url), parsed.shown, parsed.scheme, [region]]
        with psycopg.connect(settings.database_url) as c:
            row = c.execute(
                f"INSERT INTO notification_channels ({', '.join(names)})"
                f" VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
                [*values, *columns.values()],
            ).fetchone()
        assert row is not None
        made.append(row[0])
        return row[0]

    yield make
    with psycopg.connect(settings.database_url) as c:
        for cid in made:
            c.execute("UPDATE notification_channels SET active = false WHERE id = %s", (cid,))
            c.execute(
                "UPDATE deliveries SET status = 'failed', last_error = 'test over'"
                " WHERE channel = %s AND status = 'pending'",
                (f"apprise:{cid}",),
            )


@pytest.fixture
def channel_dispatcher(settings) -> Iterator:
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(**updates: object) -> Dispatcher:
        config = dataclasses.replace(FAST, mqtt_client_id=fresh_id("dispatch"))
        changed = allowing_loopback(settings).model_copy(
            update={
                "console_base_url": CONSOLE,
                "ack_deadline_critical_s": None,  # escalation: tests/alerts/test_escalation.py
                "ack_deadline_warning_s": None,
                **updates,
            }
        )
        dispatcher = Dispatcher(changed, config)
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
