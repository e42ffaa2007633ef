"""The command sender: a thread of the dispatcher (`tagwatch dispatch`) that sends commands to
devices over MQTT, expires those that ran out, and turns pursuit triggers into commands.

Why in the dispatcher: it already holds the one service account that publishes to devices'
topics (its broker role may publish on `em/v1/+/cmd` and `owntracks/+/+/cmd`), and it already
delivers at least once from rows written in other processes' transactions. Pursuit is decided in
the alert's own transaction (a `pursuit_triggers` row beside the outbox row, written by
`store.engine_repository.enqueue`), so no alert that opened is ever missed, and the engine stays
pure; the commands themselves are made here, where the `TAGWATCH_PURSUIT_*` settings are read.

At least once: a command is published (QoS 1), and marked sent in the transaction that claimed
it, after the broker's PUBACK; a crash before the commit sends it again. A tag's sent command is
published again every `TAGWATCH_COMMAND_RESEND_S` until it answers or the command expires, so
tags deduplicate on the command id.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg

from tagwatch.alerts import device_commands as dc
from tagwatch.ingest.broker_accounts import command_topic
from tagwatch.settings import Settings
from tagwatch.store import commands

log = logging.getLogger("tagwatch.commands")

BATCH = 100


class Outcome(Protocol):
    @property
    def ok(self) -> bool: ...


# The dispatcher's MqttPublisher.publish: QoS 1, one outcome per message after its PUBACK.
Publish = Callable[[Sequence[tuple[str, bytes]]], Sequence[Outcome]]


def policy_of(settings: Settings) -> commands.PursuitPolicy:
    return commands.PursuitPolicy(
        enabled=settings.pursuit_enabled,
        interval_s=settings.pursuit_interval_s,
        limit_s=settings.pursuit_limit_s,
        command_ttl_s=settings.command_ttl_s,
    )


def wire(command: commands.Sendable) -> tuple[str, bytes]:
    """The topic and payload of a command: the contract's object for a tag, the OwnTracks apps'
    own `cmd` object for a phone."""
    topic = command_topic(command.device_id, command.owntracks_topic)
    if command.kind == "tag":
        body: dict[str, Any] = dc.tag_message(
            command.id,
            command.type,
            command.args,
            command.created_at.timestamp(),
            command.expires_at.timestamp(),
        )
    else:
        body = dc.owntracks_message(command.type, command.args, command.normal_interval_s)
    return topic, json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class CommandSender:
    """Pursuit triggers, expiry and sending, one round at a time on one connection."""

    def __init__(self, settings: Settings, publish: Publish, poll_s: float = 1.0) -> None:
        self.settings = settings
        self.publish = publish
        self.policy = policy_of(settings)
        self.resend_s = settings.command_resend_s
        self.poll_s = poll_s

    def round(self, conn: psycopg.Connection[Any]) -> int:
        """One round; returns how many triggers and commands it handled (0: nothing to do)."""
        with conn.transaction():
            handled = commands.apply_pursuit_triggers(conn, self.policy, BATCH)
        with conn.transaction():
            expired = commands.expire_due(conn)
        if expired:
            log.info("%d command(s) expired", expired)
        with conn.transaction():
            due = commands.claim_sendable(conn, self.resend_s, BATCH)
            messages: list[tuple[str, bytes]] = []
            sendable: list[commands.Sendable] = []
            for command in due:
                try:
                    messages.append(wire(command))
                    sendable.append(command)
                except (dc.CommandRefused, KeyError, ValueError) as exc:
                    commands.mark_failed(conn, command.id, f"cannot be written: {exc}")
            if messages:
                attempts = self.publish(messages)
                sent = [c.id for c, a in zip(sendable, attempts, strict=True) if a.ok]
                commands.mark_sent(conn, sent)
                if len(sent) < len(sendable):
                    log.warning("%d command(s) not sent; retried", len(sendable) - len(sent))
        return handled + len(due)

    def wait_s(self, conn: psycopg.Connection[Any]) -> float:
        due_in = commands.seconds_to_next(conn)
        conn.rollback()
        if due_in is None:
            return self.poll_s
        return max(0.05, min(self.poll_s, due_in))

    def run(self, stop: threading.Event) -> None:
        url = self.settings.database_url_for("dispatcher")
        while not stop.is_set():
            try:
                with (
                    psycopg.connect(url) as conn,
                    psycopg.connect(url, autocommit=True) as listener,
                ):
                    commands.listen(listener)
                    while not stop.is_set():
                        if self.round(conn) >= BATCH:
                            continue
                        for _ in listener.notifies(timeout=self.wait_s(conn), stop_after=1):
                            pass
            except psycopg.Error as exc:
                log.warning("command sender database error: %s", exc)
                stop.wait(1.0)
            except Exception:
                log.exception("command sender error")
                stop.wait(1.0)


__all__ = ["CommandSender", "policy_of", "wire"]
