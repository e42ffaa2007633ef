"""Human channels in tests: a real SMTP server on loopback (aiosmtpd), channel rows as the API
writes them, a dispatcher with the channels' settings, and alerts opened the engine's way
(fixtures in tests/alerts/conftest.py: ``smtp_server``, ``add_channel``, ``channel_dispatcher``)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage
from typing import Any

import psycopg
from aiosmtpd.controller import Controller

from tagwatch.alerts.dispatcher import DispatcherConfig
from tagwatch.alerts.rules import AlertChange
from tagwatch.settings import Settings
from tagwatch.store.engine_repository import apply_changes
from tests.support import fresh_id

CONSOLE = "https://console.tagwatch.example.org"
FAST = DispatcherConfig(
    workers=2, batch_size=10, poll_interval_s=0.2, backoff_base_s=0.3, backoff_cap_s=1.0
)
CAPE_TOWN = (-33.92490, 18.42410)


class Mailbox:
    """An SMTP server on loopback keeping what it accepts; ``refuse`` answers the next n
    messages with a temporary failure (451), as a mail server under load does."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.messages: list[EmailMessage] = []
        self.refused = 0
        self.refuse = 0
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            if self.refuse > 0:
                self.refuse -= 1
                self.refused += 1
                return "451 4.3.0 try again later"
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"

    def restart(self) -> None:
        """A stopped aiosmtpd controller cannot start again: a new one on the same port."""
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=tagwatch@example.org&to={to}&mode=insecure"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if address in str(m["To"])]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def open_alert(conn: psycopg.Connection, sid: int, alert_type: str, **change: Any) -> int:
    """An alert opened the engine's way: row, history, outbox and deliveries."""
    key = fresh_id(alert_type)
    opened = AlertChange(action="open", episode_key=key, type=alert_type, at=time.time(), **change)
    assert apply_changes(conn, sid, [opened]) == 1
    row = conn.execute(
        "SELECT id FROM alerts WHERE subject_id = %s AND episode_key = %s", (sid, key)
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def delivery_log(conn: psycopg.Connection, alert_id: int, channel: str) -> list[tuple]:
    return conn.execute(
        "SELECT da.ok, da.error FROM delivery_attempts da JOIN outbox o ON o.id = da.outbox_id"
        " WHERE o.alert_id = %s AND da.channel = %s ORDER BY da.id",
        (alert_id, channel),
    ).fetchall()


def delivery_status(conn: psycopg.Connection, alert_id: int, channel: str) -> list[tuple]:
    rows = conn.execute(
        "SELECT d.status, d.attempts FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
        " WHERE o.alert_id = %s AND d.channel = %s ORDER BY o.id",
        (alert_id, channel),
    ).fetchall()
    conn.commit()
    return rows


def without_escalation(settings: Settings) -> Settings:
    """Settings whose dispatcher escalates nothing. Escalation has tests of its own; a test about
    delivery would otherwise have its dispatcher first escalate (and notify) every alert that
    earlier test files left open in the shared database, and its own alert waits behind them."""
    return settings.model_copy(
        update={"ack_deadline_critical_s": None, "ack_deadline_warning_s": None}
    )
